"""Interest aggregator: Gumbel-softmax limits, attention readout normalisation, member cap."""

from __future__ import annotations

import torch

from distrec.models.igrec.aggregator import (
    attention_readout,
    cap_members,
    gumbel_softmax,
    segment_softmax,
    select_interests,
)


def test_gumbel_soft_weights_sum_to_one() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5)
    for tau in (0.1, 0.5, 1.0, 5.0):
        w = gumbel_softmax(logits, tau, generator=gen)
        torch.testing.assert_close(w.sum(-1), torch.ones(64))
        assert (w >= 0).all()


def test_gumbel_becomes_one_hot_as_tau_goes_to_zero() -> None:
    logits = torch.randn(256, 4, generator=torch.Generator().manual_seed(7))
    spread = []
    for tau in (1.0, 0.1, 0.01, 1e-3, 1e-5):
        w = gumbel_softmax(logits, tau, generator=torch.Generator().manual_seed(1))
        spread.append(float((1.0 - w.max(-1).values).mean()))
    # Mass off the arg max shrinks monotonically and vanishes at a tiny temperature.
    assert spread == sorted(spread, reverse=True)
    assert spread[-1] < 1e-3
    # The same noise with the same seed: the limit is the one-hot of the noisy arg max.
    w = gumbel_softmax(logits, 1e-5, generator=torch.Generator().manual_seed(1))
    hard = gumbel_softmax(logits, 1.0, hard=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(w, hard, atol=1e-4, rtol=0)


def test_hard_gumbel_is_one_hot_with_soft_gradient() -> None:
    logits = torch.randn(8, 3, requires_grad=True)
    w = gumbel_softmax(logits, 0.5, hard=True, generator=torch.Generator().manual_seed(2))
    assert set(w.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(w.detach().sum(-1), torch.ones(8))
    (w * torch.arange(3.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_no_noise_is_plain_softmax() -> None:
    logits = torch.randn(5, 3)
    torch.testing.assert_close(
        gumbel_softmax(logits, 0.7, noise=False), torch.softmax(logits / 0.7, -1)
    )


def test_segment_softmax_sums_to_one_per_segment() -> None:
    seg = torch.tensor([0, 0, 0, 2, 2, 3])
    w = segment_softmax(torch.randn(6, 4) * 30, seg, num_segments=5)
    sums = torch.zeros(5, 4).index_add(0, seg, w)
    torch.testing.assert_close(sums[[0, 2, 3]], torch.ones(3, 4))
    torch.testing.assert_close(sums[[1, 4]], torch.zeros(2, 4))  # empty groups


def test_attention_readout_weights_sum_to_one_per_group_and_interest() -> None:
    torch.manual_seed(0)
    groups, m, d = 7, 3, 8
    sizes = torch.tensor([1, 2, 5, 9, 3, 4, 30])
    edge_group = torch.repeat_interleave(torch.arange(groups), sizes)
    member_interests = torch.randn(len(edge_group), m, d)
    w_att = torch.randn(d)
    out, weights = attention_readout(member_interests, edge_group, groups, w_att)
    assert out.shape == (groups, m, d) and weights.shape == (len(edge_group), m)
    per_group = torch.zeros(groups, m).index_add(0, edge_group, weights)
    torch.testing.assert_close(per_group, torch.ones(groups, m))
    # Against a direct per-group computation of Eq. 3-4.
    for g in range(groups):
        x = member_interests[edge_group == g]  # [n, M, D]
        gamma = torch.softmax(x @ w_att, dim=0)
        torch.testing.assert_close(out[g], (gamma.unsqueeze(-1) * x).sum(0))


def test_select_interests_mixes_readouts_with_weights() -> None:
    readout = torch.randn(4, 3, 6)
    e_g = torch.randn(4, 6)
    i_star, w = select_interests(readout, e_g, 0.5, hard=False, noise=False)
    torch.testing.assert_close(w.sum(-1), torch.ones(4))
    torch.testing.assert_close(i_star, (w.unsqueeze(-1) * readout).sum(1))


def test_cap_members_keeps_at_most_cap_and_only_real_members() -> None:
    sizes = torch.tensor([3, 50, 7, 500])
    eg = torch.repeat_interleave(torch.arange(4), sizes)
    eu = torch.randperm(len(eg))
    g2, u2 = cap_members(eg, eu, 4, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(g2, minlength=4).tolist() == [3, 10, 7, 10]
    pairs = set(zip(eg.tolist(), eu.tolist()))
    assert set(zip(g2.tolist(), u2.tolist())) <= pairs
    # A different seed draws a different sample of the big groups.
    g3, u3 = cap_members(eg, eu, 4, 10, torch.Generator().manual_seed(1))
    assert not torch.equal(u2, u3)


def test_cap_above_every_group_size_is_the_identity() -> None:
    eg = torch.repeat_interleave(torch.arange(3), torch.tensor([4, 1, 6]))
    eu = torch.arange(11)
    for cap in (6, 7, 1000):
        g2, u2 = cap_members(eg, eu, 3, cap, torch.Generator().manual_seed(0))
        assert torch.equal(g2, eg) and torch.equal(u2, eu)
