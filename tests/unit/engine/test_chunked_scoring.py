"""The item-chunked scorer (distrec.eval.chunked) equals a full stable sort and brute-force AUC
counts, at every chunk size, with ties, exclusions, candidate lists and item slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.eval.chunked import (
    chunk_topk,
    chunked_auc_counts,
    chunked_target_scores,
    chunked_topk,
    multi_interest_scores,
)

Q, N, D, K = 9, 53, 3, 7


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(Q, D, generator=g)
    items = torch.randn(N, D, generator=g)
    items[10:20] = items[3]  # a block of ties straddling chunk borders
    items[40:] = 0.0  # many ties at score 0
    rng = np.random.default_rng(0)
    excl = [(r, int(i)) for r in range(Q) for i in rng.choice(N, size=r % 4, replace=False)]
    incl = [(r, int(i)) for r in range(Q) for i in rng.choice(N, size=5 + r, replace=False)]
    tgt = [(r, int(i)) for r in range(Q) for i in rng.choice(N, size=1 + r % 3, replace=False)]
    return (
        q,
        items,
        torch.tensor(excl, dtype=torch.int64).reshape(-1, 2),
        torch.tensor(incl, dtype=torch.int64).reshape(-1, 2),
        torch.tensor(tgt, dtype=torch.int64).reshape(-1, 2),
    )


def _reference(s: np.ndarray, ranked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.where(ranked, s, -np.inf)
    order = np.stack([np.lexsort((np.arange(s.shape[1]), -row)) for row in s])[:, :k]
    vals = np.take_along_axis(s, order, 1)
    order[np.isneginf(vals)] = -1
    return vals, order


def _ranked(excl: torch.Tensor, incl: torch.Tensor | None) -> np.ndarray:
    ranked = np.ones((Q, N), dtype=bool)
    if incl is not None:
        ranked[:] = False
        ranked[incl[:, 0].numpy(), incl[:, 1].numpy()] = True
    ranked[excl[:, 0].numpy(), excl[:, 1].numpy()] = False
    return ranked


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 53, 100])
@pytest.mark.parametrize("with_include", [False, True])
def test_chunked_topk_equals_stable_sort(chunk: int, with_include: bool) -> None:
    q, items, excl, incl, _ = _problem()
    inc = incl if with_include else None

    def score_fn(offset: int, reps: torch.Tensor) -> torch.Tensor:
        return q @ reps.T

    vals, idx = chunked_topk(score_fn, items, 0, Q, K, chunk=chunk, exclude=excl, include=inc)
    want_v, want_i = _reference((q @ items.T).numpy(), _ranked(excl, inc), K)
    np.testing.assert_array_equal(idx.numpy(), want_i)
    np.testing.assert_allclose(vals.numpy(), want_v, rtol=1e-6)


def test_slices_merge_like_one_table() -> None:
    """Two item slices (as two ranks hold them), merged by a stable sort of the concatenation,
    give the one-table list: the cross-rank merge C1's sharded evaluation relies on."""
    q, items, excl, _, _ = _problem()

    def score_fn(offset: int, reps: torch.Tensor) -> torch.Tensor:
        return q @ reps.T

    parts = [
        chunked_topk(score_fn, items[lo:hi], lo, Q, K, chunk=5, exclude=excl)
        for lo, hi in ((0, 27), (27, N))
    ]
    v, pos = torch.cat([p[0] for p in parts], 1).sort(dim=1, descending=True, stable=True)
    idx = torch.cat([p[1] for p in parts], 1).gather(1, pos[:, :K])
    idx[torch.isneginf(v[:, :K])] = -1
    _, want_i = _reference((q @ items.T).numpy(), _ranked(excl, None), K)
    np.testing.assert_array_equal(idx.numpy(), want_i)


def test_chunk_topk_resolves_ties_at_the_cut() -> None:
    s = torch.tensor([[1.0, 2.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    v, i = chunk_topk(s, 3)
    assert i.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert v.tolist() == [[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]]


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_multi_interest_scores(reduce: str) -> None:
    g = torch.Generator().manual_seed(1)
    q, items = torch.randn(5, 4, 6, generator=g), torch.randn(11, 6, generator=g)
    per = torch.einsum("bfd,nd->bfn", q, items)
    want = per.sum(1) if reduce == "sum" else per.max(1).values
    torch.testing.assert_close(multi_interest_scores(q, items, reduce), want)


@pytest.mark.parametrize("chunk", [3, 16, 53])
@pytest.mark.parametrize("with_include", [False, True])
def test_chunked_auc_counts_equal_brute_force(chunk: int, with_include: bool) -> None:
    q, items, excl, incl, tgt = _problem()
    inc = torch.cat([incl, tgt]) if with_include else None

    def score_fn(offset: int, reps: torch.Tensor) -> torch.Tensor:
        return q @ reps.T

    tsc = chunked_target_scores(score_fn, items, 0, tgt, chunk=chunk)
    got = chunked_auc_counts(
        score_fn, items, 0, tgt, tsc, chunk=chunk, exclude=excl, include=inc, pair_block=5
    )
    s = (q @ items.T).double().numpy()
    ranked = _ranked(excl, inc)
    for p, (r, t) in enumerate(tgt.tolist()):
        tr = set(tgt[tgt[:, 0] == r, 1].tolist())
        negs = [j for j in range(N) if ranked[r, j] and j not in tr]
        assert got[p, 2] == len(negs)
        assert got[p, 0] == sum(s[r, j] < s[r, t] for j in negs)
        assert got[p, 1] == sum(s[r, j] == s[r, t] for j in negs)
