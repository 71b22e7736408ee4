"""Capsule routing, squash, read-outs and the losses of DisMIR, against direct evaluations."""

from __future__ import annotations

import numpy as np
import torch

from distrec.models.dismir.layers import (
    CapsuleRouting,
    SelfAttentiveExtractor,
    hard_negative_bpr,
    interest_weights,
    pad_jagged,
    score_items,
    squash,
)
from distrec.models.dismir.losses import backward_flow, partition_loss, routing_variance


def _history(
    b: int = 5, length: int = 7, d: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, length, d, generator=g)
    lengths = torch.tensor([length, 3, 1, 5, 0][:b])
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return h * mask.unsqueeze(-1), mask


def test_routing_weights_sum_to_one_over_interests() -> None:
    h, mask = _history()
    noise = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(1))
    for iters in (1, 3):
        v, b = CapsuleRouting(num_interests=4, iters=iters)(h, mask, noise)
        assert v.shape == (5, 4, 8) and b.shape == (5, 7, 4)
        sums = b.sum(-1)
        torch.testing.assert_close(sums[mask], torch.ones(int(mask.sum())))
        assert torch.all(sums[~mask] == 0)  # padding routes nowhere
        assert torch.all(b >= 0)


def test_routing_follows_the_formula_for_one_pass() -> None:
    """One pass: b0 = softmax(c0), v = squash(sum_i b0 e_i), c1 = c0 + e_i . v, m = sum b1 e_i."""
    h, mask = _history(b=2, length=4, d=3, seed=3)
    mask[:] = True
    noise = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(4))
    v, b = CapsuleRouting(num_interests=2, iters=1)(h, mask, noise)
    hn, c0 = h.numpy().astype(np.float64), noise.numpy().astype(np.float64)

    def np_squash(m: np.ndarray) -> np.ndarray:
        n2 = (m * m).sum(-1, keepdims=True)
        return n2 / (n2 + 1) * m / np.sqrt(n2)

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    b0 = softmax(c0)
    v0 = np_squash(np.einsum("blf,bld->bfd", b0, hn))
    b1 = softmax(c0 + np.einsum("bld,bfd->blf", hn, v0))
    np.testing.assert_allclose(b.numpy(), b1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        v.numpy(), np_squash(np.einsum("blf,bld->bfd", b1, hn)), rtol=1e-4, atol=1e-6
    )


def test_squash_keeps_norms_below_one_and_direction() -> None:
    m = torch.cat([torch.randn(100, 16, dtype=torch.float64) * s for s in (1e-3, 1.0, 1e3)])
    v = squash(m)
    norms = v.norm(dim=-1)
    assert torch.all(norms < 1.0)  # strictly, in float64
    cos = torch.nn.functional.cosine_similarity(v, m, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    n2 = (m**2).sum(-1)
    torch.testing.assert_close(norms, n2 / (n2 + 1))  # |v| = |m|^2 / (|m|^2 + 1)
    # float32 rounds |m|^2 / (|m|^2 + 1) to 1 once |m| > ~4e3; it never exceeds 1
    assert torch.all(squash(m.float()).norm(dim=-1) <= 1.0 + 1e-6)
    h, mask = _history()
    v, _ = CapsuleRouting(4)(h, mask, torch.randn(5, 7, 4))
    assert torch.all(v.norm(dim=-1) < 1.0)


def test_self_attentive_extractor_attention_is_a_distribution_over_history() -> None:
    h, mask = _history()
    m, att = SelfAttentiveExtractor(dim=8, num_interests=3, max_len=7)(h, mask)
    assert m.shape == (5, 3, 8)
    has = mask.any(1)
    torch.testing.assert_close(att.sum(1)[has], torch.ones(int(has.sum()), 3))
    assert torch.all(att[~mask] == 0)


def test_interest_attention_and_scores_match_eq5() -> None:
    h, mask = _history(b=4)
    m = torch.randn(4, 3, 8)
    items = torch.randn(6, 8)
    a = interest_weights(m, h, mask, "attention")
    torch.testing.assert_close(a.sum(-1), torch.ones(4))
    mean_e = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    torch.testing.assert_close(a, torch.softmax(torch.einsum("bfd,bd->bf", m, mean_e), -1))
    q = m * a.unsqueeze(-1)
    expected = torch.einsum("bf,bfn->bn", a, torch.einsum("bfd,nd->bfn", m, items))
    torch.testing.assert_close(score_items(q, items, "attention"), expected)
    torch.testing.assert_close(interest_weights(m, h, mask, "mean"), torch.full((4, 3), 1 / 3))
    torch.testing.assert_close(
        score_items(m, items, "max"), torch.einsum("bfd,nd->bfn", m, items).max(1).values
    )
    # per-sample candidates agree with full ranking
    cand = items[:2].unsqueeze(0).expand(4, 2, 8)
    torch.testing.assert_close(score_items(q, cand, "attention"), expected[:, :2])


def test_pad_jagged_left_aligns_rows() -> None:
    values = torch.arange(12.0).view(6, 2)
    out, mask = pad_jagged(values, torch.tensor([2, 0, 4]), 3)
    assert mask.tolist() == [[True, True, False], [False] * 3, [True, True, True]]
    assert out[0, :2].tolist() == [[0, 1], [2, 3]] and out[2].tolist() == [[4, 5], [6, 7], [8, 9]]


def test_hard_negative_loss_uses_the_hardest_valid_candidate() -> None:
    s_pos = torch.tensor([1.0, 0.0])
    s_neg = torch.tensor([[0.5, 3.0, -1.0], [2.0, 0.1, 0.2]])
    valid = torch.tensor([[True, False, True], [True, True, True]])
    got = hard_negative_bpr(s_pos, s_neg, valid)
    want = -(np.log(1 / (1 + np.exp(-(1.0 - 0.5)))) + np.log(1 / (1 + np.exp(-(0.0 - 2.0))))) / 2
    assert abs(got.item() - want) < 1e-6


def _tiny_graph() -> tuple[np.ndarray, np.ndarray]:
    """Partition weights W [N, K] and a row-stochastic confidence S [N, N] (zero diagonal)."""
    rng = np.random.default_rng(7)
    n, k = 6, 3
    co = rng.integers(0, 4, size=(n, n)).astype(np.float64)
    co = np.triu(co, 1) + np.triu(co, 1).T
    co[co.sum(1) == 0, (np.flatnonzero(co.sum(1) == 0) + 1) % n] = 1.0
    return rng.normal(size=(n, k)), co / co.sum(1, keepdims=True)


def test_partition_loss_equals_numpy_theorem4_on_a_tiny_graph() -> None:
    """Enumerating the expectation over j ~ M(.|S_i) with every other item as negatives makes the
    sampled loss exactly -(1/N) sum_i sum_j S_ij log(exp(w_i.w_j) / sum_j' exp(w_i.w_j'))."""
    w, s = _tiny_graph()
    n = len(w)
    z = w @ w.T
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    theorem4 = -(s * log_p).sum() / s.sum()
    ii, jj = np.nonzero(s)
    wt = torch.tensor(w)
    negs = torch.stack([wt[[x for x in range(n) if x != j]] for j in jj])  # [P, N-1, K]
    got = partition_loss(wt[ii], wt[jj], negs, torch.tensor(s[ii, jj]))
    assert abs(got.item() - theorem4) < 1e-10


def test_partition_loss_with_shared_negatives_is_the_sampled_softmax() -> None:
    rng = np.random.default_rng(0)
    a, p, neg = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    logits = np.concatenate([(a * p).sum(1, keepdims=True), a @ neg.T], axis=1)
    want = -np.mean(logits[:, 0] - np.log(np.exp(logits).sum(1)))
    got = partition_loss(torch.tensor(a), torch.tensor(p), torch.tensor(neg))
    assert abs(got.item() - want) < 1e-10


def test_routing_variance_matches_eq1() -> None:
    g = torch.Generator().manual_seed(0)
    b = torch.softmax(torch.randn(2, 5, 3, generator=g), -1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    b = b * mask.unsqueeze(-1)
    want = 0.0
    for u in range(2):
        bu = b[u][mask[u]].numpy().astype(np.float64)
        c = bu - bu.mean(0, keepdims=True)
        want += (np.diag(c.T @ c) ** 2).sum() / 2
    assert abs(routing_variance(b, mask).item() - want) < 1e-6


def test_backward_flow_pulls_interests_to_their_representative_item() -> None:
    h, mask = _history(b=4)
    m = torch.randn(4, 3, 8, requires_grad=True)
    b = torch.softmax(torch.randn(4, 7, 3), -1) * mask.unsqueeze(-1)
    loss = backward_flow(m, h, b, mask)
    assert torch.isfinite(loss)
    loss.backward()
    # one gradient step on the interests makes the representative items more likely
    with torch.no_grad():
        m2 = m - 0.1 * m.grad
    assert backward_flow(m2, h, b, mask).item() < loss.item()


def test_interest_stats_of_one_user() -> None:
    from research.dismir_analysis import user_interest_stats

    h = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = user_interest_stats(h, np.array([0, 0, 1, 2]), num_interests=4)
    # pairs (0,1): cos 0; (0,2): cos 1/sqrt2; (1,2): 1/sqrt2 -> mean 100 * sqrt2 / 3
    assert abs(s["similarity"] - 100 * np.sqrt(2) / 3) < 1e-9
    assert s["min"] == 0.0 and s["max"] == 50.0
    assert abs(s["std"] - np.std([50.0, 25.0, 25.0, 0.0])) < 1e-12


def test_item_partition_stats_against_direct_formula() -> None:
    """Exact Theorem 4 loss (full denominator, expectation over the normalised row) and the
    same-group share, recomputed with explicit loops on a 5-item graph."""
    from distrec.data.csr import Csr
    from research.dismir_analysis import item_partition_stats

    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3))
    src, dst = np.array([0, 0, 1, 2, 3, 3]), np.array([1, 2, 0, 3, 0, 4])
    wts = np.array([2.0, 1.0, 1.0, 3.0, 1.0, 1.0])
    g = Csr.from_pairs(src, dst, num_src=5, num_dst=5, weights=wts)
    got = item_partition_stats(w, g, chunk=2)
    group = w.argmax(1)
    ce, same = [], []
    for i in range(5):
        row = [(j, x) for s, j, x in zip(src, dst, wts, strict=True) if s == i]
        if not row:
            continue
        tot = sum(x for _, x in row)
        logits = np.array([w[i] @ w[j] for j in range(5)])
        lse = np.log(np.exp(logits).sum())
        ce.append(-sum(x / tot * (logits[j] - lse) for j, x in row))
        same.append(sum(x / tot for j, x in row if group[j] == group[i]))
    assert got["anchors"] == 4
    np.testing.assert_allclose(got["partition_ce"], np.mean(ce), rtol=1e-5)
    np.testing.assert_allclose(got["same_group"], np.mean(same), rtol=1e-6)
    sizes = np.bincount(group, minlength=3) / 5
    np.testing.assert_allclose(got["same_group_chance"], (sizes**2).sum())
    # constant embeddings: every item equally likely, so the loss is log N
    flat = item_partition_stats(np.ones((5, 3)), g)
    np.testing.assert_allclose(flat["partition_ce"], np.log(5), rtol=1e-6)
