"""MDGR dynamic graph clustering: sparsification, attention normalisation, batched == per-sequence."""

from __future__ import annotations

import pytest
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
    labels, cent = kmeans(x, mask, k=3, steps=2)
    prep = att.prepare(torch.randn(x.shape[0], 2, x.shape[-1]))  # two targets per sequence
    e = att.coefficients(x, cent, labels, prep, adj)  # [B, C, H, L, L]
    sums = e.sum(dim=-1)  # [B, C, H, L]
    rows = mask[:, None, None].expand_as(sums)
    torch.testing.assert_close(sums[rows], torch.ones(int(rows.sum())))
    assert (e[~adj[:, None, None].expand_as(e)] == 0).all()


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


def _reference_coefficients(
    att: ClusterAttention,
    x: torch.Tensor,
    cvec: torch.Tensor,
    target: torch.Tensor,
    adj: torch.Tensor,
    edge: torch.Tensor,
) -> torch.Tensor:
    """Eq. 10-12 written out: each head's MLPs on the concatenations, one target per sequence."""
    b, length, d = x.shape
    xc = att.w_c(x).view(b, length, att.heads, d)
    xq = att.w_q(x).view(b, length, att.heads, d)
    t = target.unsqueeze(1).expand(-1, length, -1)
    scores = []
    for h in range(att.heads):
        a = att.mlp_a[h](torch.cat([xc[:, :, h], cvec, xc[:, :, h] * cvec], -1))
        s = att.mlp_b[h](torch.cat([xq[:, :, h], t, xq[:, :, h] * t], -1))
        scores.append(a + s.transpose(1, 2))
    e = torch.nn.functional.leaky_relu(torch.stack(scores, dim=1), 0.2) + edge.unsqueeze(1)
    e = e.masked_fill(~adj.unsqueeze(1), -1e9)
    return torch.softmax(e, dim=-1) * adj.any(dim=-1, keepdim=True).unsqueeze(1)


def test_blockwise_attention_equals_the_concatenation_form_per_target() -> None:
    """The rearranged first layers (A2 c per cluster, eq. 11's D x D matrix per target) give
    eq. 10-12's coefficients for every one of a sequence's C targets, gradients included."""
    torch.manual_seed(2)
    x, mask = _batch(seed=7)
    att = ClusterAttention(x.shape[-1], heads=2)
    sim = weighted_cosine(x, torch.rand(2, x.shape[-1]) + 0.5)
    adj = sparsify_top(sim, mask, 0.4) | (
        torch.eye(x.shape[1], dtype=torch.bool) & mask.unsqueeze(2)
    )
    labels, cent = kmeans(x, mask, k=3, steps=3)
    cvec = torch.gather(cent, 1, labels.clamp(min=0).unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    targets = torch.randn(x.shape[0], 3, x.shape[-1])
    e = att.coefficients(x, cent, labels, att.prepare(targets), adj, sim)  # [B, C, H, L, L]
    for c in range(targets.shape[1]):
        ref = _reference_coefficients(att, x, cvec, targets[:, c], adj, sim)
        torch.testing.assert_close(e[:, c], ref, atol=1e-6, rtol=1e-5)
    g_new = torch.autograd.grad(e[:, 1].pow(2).sum(), att.mlp_b[0][0].weight)[0]
    ref = _reference_coefficients(att, x, cvec, targets[:, 1], adj, sim)
    g_ref = torch.autograd.grad(ref.pow(2).sum(), att.mlp_b[0][0].weight)[0]
    torch.testing.assert_close(g_new, g_ref, atol=1e-6, rtol=1e-4)


def test_dgc_over_c_targets_equals_one_target_at_a_time() -> None:
    """Sharing the first cycle's target-free part across a sequence's targets changes nothing."""
    torch.manual_seed(3)
    x, mask = _batch(seed=9)
    dgc = DynamicGraphClustering(
        x.shape[-1], k=3, iterations=3, sim_heads=2, gamma=0.4, heads=2, kmeans_steps=3
    )
    targets = torch.randn(x.shape[0], 4, x.shape[-1])
    out, labels, cent = dgc(x, mask, targets)  # [B, C, L, D], [B, C, L], [B, C, K, D]
    for c in range(targets.shape[1]):
        oc, lc, cc = dgc(x, mask, targets[:, c])
        torch.testing.assert_close(out[:, c], oc, atol=1e-5, rtol=1e-5)
        assert torch.equal(labels[:, c], lc)
        torch.testing.assert_close(cent[:, c], cc, atol=1e-5, rtol=1e-5)


def test_aware_cycles_run_the_earlier_cycles_on_the_free_query() -> None:
    """model.aware_cycles = n (not the paper): the first m - n cycles are one target-free DGC on
    the free query, the last n one DGC per target on its output; n = m is the paper's form."""
    torch.manual_seed(4)
    x, mask = _batch(seed=11)
    kw = dict(k=3, iterations=3, sim_heads=2, gamma=0.4, heads=2, kmeans_steps=3)
    targets = torch.randn(x.shape[0], 3, x.shape[-1])
    free = torch.randn(x.shape[0], x.shape[-1])
    paper = DynamicGraphClustering(x.shape[-1], **kw)  # type: ignore[arg-type]
    every = DynamicGraphClustering(x.shape[-1], **kw, aware_cycles=3)  # type: ignore[arg-type]
    every.load_state_dict(paper.state_dict())
    for a, b in zip(paper(x, mask, targets), every(x, mask, targets, free), strict=True):
        assert torch.equal(a, b)
    last = DynamicGraphClustering(x.shape[-1], **kw, aware_cycles=1)  # type: ignore[arg-type]
    last.load_state_dict(paper.state_dict())
    out, labels, cent = last(x, mask, targets, free)
    head = DynamicGraphClustering(x.shape[-1], **{**kw, "iterations": 2})  # type: ignore[arg-type]
    tail = DynamicGraphClustering(x.shape[-1], **{**kw, "iterations": 1})  # type: ignore[arg-type]
    head.load_state_dict(paper.state_dict())
    tail.load_state_dict(paper.state_dict())
    shared = head(x, mask, free)[0] * mask.unsqueeze(-1)
    for c in range(targets.shape[1]):
        oc, lc, cc = tail(shared, mask, targets[:, c])
        torch.testing.assert_close(out[:, c], oc, atol=1e-5, rtol=1e-5)
        assert torch.equal(labels[:, c], lc)
        torch.testing.assert_close(cent[:, c], cc, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="aware_cycles"):
        DynamicGraphClustering(x.shape[-1], **kw, aware_cycles=4)  # type: ignore[arg-type]


def test_weighted_cosine_and_its_gradients_equal_the_normalize_form() -> None:
    """Eq. 7-8 as written (a normalize per head, a mean of cosines), values and gradients:
    checks the x^2 @ (w^2)^T norms and the symmetric Gram's one-product backward."""
    x, _ = _batch(seed=5)
    x = x.double().requires_grad_()
    w = (torch.rand(3, x.shape[-1], dtype=torch.float64) + 0.5).requires_grad_()
    sim = weighted_cosine(x, w)
    u = torch.nn.functional.normalize(x.unsqueeze(2) * w, dim=-1)  # [B, L, delta, D]
    ref = torch.einsum("bihd,bjhd->bij", u, u) / w.shape[0]
    torch.testing.assert_close(sim, ref)
    g = torch.randn_like(sim)  # not symmetric: the backward must use G + G^T
    torch.testing.assert_close(
        torch.autograd.grad((sim * g).sum(), [x, w]), torch.autograd.grad((ref * g).sum(), [x, w])
    )


def test_attention_update_equals_the_concatenation_form_with_gradients() -> None:
    """Eq. 13 from the written-out eq. 10-12 (mean over heads of E @ x, padding rows zero):
    values and the gradients of every attention parameter and of x (the cluster one-hot
    products, the fused [A1 | A3] layer and the additive edge/mask term included)."""
    torch.manual_seed(4)
    x, mask = _batch(seed=11)
    x = x.requires_grad_()
    att = ClusterAttention(x.shape[-1], heads=2)
    sim = weighted_cosine(x, torch.rand(2, x.shape[-1]) + 0.5)
    adj = sparsify_top(sim, mask, 0.4) | (
        torch.eye(x.shape[1], dtype=torch.bool) & mask.unsqueeze(2)
    )
    labels, cent = kmeans(x, mask, k=3, steps=3)
    cvec = torch.gather(cent, 1, labels.clamp(min=0).unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    targets = torch.randn(x.shape[0], 2, x.shape[-1])
    out = att(x, cent, labels, att.prepare(targets), adj, sim)  # [B, C, L, D]
    refs = [
        _reference_coefficients(att, x, cvec, targets[:, c], adj, sim).mean(dim=1) @ x
        for c in range(targets.shape[1])
    ]
    ref = torch.stack(refs, dim=1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert (out[~mask[:, None].expand(-1, 2, -1)] == 0).all()
    params = [x, *att.parameters()]
    g = torch.randn_like(out)
    for a, b in zip(
        torch.autograd.grad((out * g).sum(), params, retain_graph=True),
        torch.autograd.grad((ref * g).sum(), params),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_warm_kmeans_starts_from_the_given_labels() -> None:
    """kmeans(init=labels) starts from the means over those clusters: labels of a converged
    clustering are then a fixed point, reached in one step, and padding stays -1."""
    x, mask = _batch(seed=7)
    labels, cent = kmeans(x, mask, k=3, steps=50)  # converged (the exact stop ends the loop)
    warm_labels, warm_cent = kmeans(x, mask, k=3, steps=1, init=labels)
    assert torch.equal(warm_labels, labels)
    torch.testing.assert_close(warm_cent, cent)
    # a cluster the init leaves empty falls back to the evenly spaced pick; labels stay valid
    one = torch.where(mask, torch.zeros_like(labels), labels)
    lab, _ = kmeans(x, mask, k=3, steps=3, init=one)
    assert ((lab >= 0) & (lab < 3))[mask].all() and (lab[~mask] == -1).all()


def test_kmeans_warm_switch_keeps_the_default_and_reuses_labels() -> None:
    """model.kmeans_warm (not the paper): off is the default path; on, every clustering after
    the first is warm-started from the previous cycle's labels (per pair after the fan-out)."""
    torch.manual_seed(6)
    x, mask = _batch(seed=13)
    kw = dict(k=3, iterations=3, sim_heads=2, gamma=0.4, heads=2, kmeans_steps=3)
    targets = torch.randn(x.shape[0], 2, x.shape[-1])
    paper = DynamicGraphClustering(x.shape[-1], **kw)  # type: ignore[arg-type]
    off = DynamicGraphClustering(x.shape[-1], **kw, kmeans_warm=False)  # type: ignore[arg-type]
    warm = DynamicGraphClustering(x.shape[-1], **kw, kmeans_warm=True)  # type: ignore[arg-type]
    off.load_state_dict(paper.state_dict())
    warm.load_state_dict(paper.state_dict())
    for a, b in zip(paper(x, mask, targets), off(x, mask, targets), strict=True):
        assert torch.equal(a, b)
    out, labels, cent = warm(x, mask, targets)
    assert out.shape == (x.shape[0], 2, *x.shape[1:]) and cent.shape == (x.shape[0], 2, 3, 8)
    valid = mask[:, None].expand_as(labels)
    assert ((labels >= 0) & (labels < 3))[valid].all() and (labels[~valid] == -1).all()
    out.sum().backward()  # gradients flow as on the default path
    assert warm.sim_w.grad is not None and warm.attn.w_q.weight.grad is not None
