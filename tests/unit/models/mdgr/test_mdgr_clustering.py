"""MDGR dynamic graph clustering: sparsification, attention normalisation, batched == per-sequence."""

from __future__ import annotations

import torch

from distrec.models.mdgr.clustering import (
    ClusterAttention,
    DynamicGraphClustering,
    gamma_count,
    kmeans,
    last_in_cluster,
    sparsify_top,
    weighted_cosine,
)


def _batch(
    b: int = 4, length: int = 12, d: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, d, generator=g)
    lengths = torch.tensor([length, length - 3, 5, 1][:b])
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return x * mask.unsqueeze(-1), mask


def test_sparsify_keeps_exactly_top_gamma_n2() -> None:
    x, mask = _batch()
    sim = weighted_cosine(x, torch.rand(3, x.shape[-1]) + 0.5)
    for gamma in (0.1, 0.3, 0.5, 1.0):
        adj = sparsify_top(sim, mask, gamma)
        for b in range(x.shape[0]):
            n = int(mask[b].sum())
            kept = adj[b]
            assert int(kept.sum()) == gamma_count(n, gamma)
            assert not kept[~mask[b]].any() and not kept[:, ~mask[b]].any()
            valid = sim[b][:n, :n]
            if 0 < int(kept.sum()) < n * n:  # every kept entry >= every dropped entry
                assert valid[kept[:n, :n]].min() >= valid[~kept[:n, :n]].max()


def test_attention_coefficients_sum_to_one_over_sources() -> None:
    torch.manual_seed(0)
    x, mask = _batch()
    att = ClusterAttention(x.shape[-1], heads=3)
    adj = sparsify_top(weighted_cosine(x, torch.ones(2, x.shape[-1])), mask, 0.3)
    adj = adj | (torch.eye(x.shape[1], dtype=torch.bool) & mask.unsqueeze(2))
    e = att.coefficients(x, x.flip(1), torch.randn(x.shape[0], x.shape[-1]), adj)
    sums = e.sum(dim=-1)  # [B, H, L]
    rows = mask.unsqueeze(1).expand_as(sums)
    torch.testing.assert_close(sums[rows], torch.ones(int(rows.sum())))
    assert (e[~adj.unsqueeze(1).expand_as(e)] == 0).all()


def test_batched_kmeans_equals_per_sequence() -> None:
    x, mask = _batch(seed=3)
    labels, cent = kmeans(x, mask, k=3, steps=4)
    for b in range(x.shape[0]):
        n = int(mask[b].sum())
        lb, cb = kmeans(x[b : b + 1, :n], mask[b : b + 1, :n], k=3, steps=4)
        assert torch.equal(labels[b, :n], lb[0])
        assert (labels[b, n:] == -1).all()
        torch.testing.assert_close(cent[b], cb[0])


def test_batched_dgc_equals_per_sequence() -> None:
    torch.manual_seed(1)
    x, mask = _batch(seed=5)
    dgc = DynamicGraphClustering(
        x.shape[-1], k=3, iterations=2, sim_heads=2, gamma=0.4, heads=2, kmeans_steps=3
    )
    target = torch.randn(x.shape[0], x.shape[-1])
    out, labels, _ = dgc(x, mask, target)
    for b in range(x.shape[0]):
        n = int(mask[b].sum())
        ob, lb, _ = dgc(x[b : b + 1, :n], mask[b : b + 1, :n], target[b : b + 1])
        torch.testing.assert_close(out[b, :n], ob[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(labels[b, :n], lb[0])


def test_interest_is_the_last_item_of_each_cluster() -> None:
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1).expand(1, 6, 2).contiguous()
    labels = torch.tensor([[0, 1, 0, 1, 1, -1]])
    z, present = last_in_cluster(x, labels, k=3)
    assert present.tolist() == [[True, True, False]]
    assert z[0, 0, 0] == 2 and z[0, 1, 0] == 4 and z[0, 2, 0] == 0
