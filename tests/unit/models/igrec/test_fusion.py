"""Group/user fusion and the interest regulariser (mask follows the threshold t)."""

from __future__ import annotations

import math

import pytest
import torch

from distrec.models.igrec.disentangler import FullyConnected, SelfGating
from distrec.models.igrec.fusion import (
    fuse_groups,
    fuse_users,
    interest_mask,
    interest_regularizer,
    interest_similarity,
)


def _interests_with_cosines(cos: list[float]) -> torch.Tensor:
    """One user, interest 0 = e1 and interest k = a unit vector at cosine cos[k-1] to e1."""
    rows = [torch.tensor([1.0, 0.0, 0.0, 0.0])]
    for k, c in enumerate(cos):
        v = torch.zeros(4)
        v[0], v[k + 1] = c, math.sqrt(1 - c * c)
        rows.append(v)
    return torch.stack(rows).unsqueeze(0)  # [1, M, 4]


def test_regulariser_mask_follows_threshold() -> None:
    x = _interests_with_cosines([0.05, 0.3, -0.6])
    sim = interest_similarity(x)[0]  # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    torch.testing.assert_close(sim[:3], torch.tensor([0.05, 0.3, -0.6]))
    for t in (0.0, 0.04, 0.1, 0.31, 0.59, 0.61, 1.01):
        mask = interest_mask(sim, t)
        expected = (sim.abs() >= t).float()
        torch.testing.assert_close(mask, expected)
        reg = interest_regularizer(x, t, absolute=True)
        torch.testing.assert_close(reg, (expected * sim.abs()).sum())
        signed = interest_regularizer(x, t, absolute=False)
        torch.testing.assert_close(signed, (expected * sim).sum())
    assert float(interest_regularizer(x, 1.01, absolute=True)) == 0.0


def test_regulariser_gradient_only_through_masked_pairs() -> None:
    x = _interests_with_cosines([0.05, 0.9]).requires_grad_(True)
    interest_regularizer(x, 0.5, absolute=True).backward()
    # Interest 1 (cos 0.05 to interest 0, small to interest 2) is below t everywhere.
    assert x.grad[0, 1].abs().sum() < x.grad[0, 2].abs().sum()


def test_fuse_groups_and_users() -> None:
    e_g = torch.randn(3, 5)
    i_star = torch.randn(3, 5)
    e_star = fuse_groups(e_g, i_star)
    torch.testing.assert_close(e_star, (e_g + i_star) / 2)
    e_u = torch.randn(4, 5)
    edge_user = torch.tensor([0, 0, 1, 3])
    edge_group = torch.tensor([0, 2, 2, 1])
    out = fuse_users(e_u, e_star, edge_user, edge_group)
    torch.testing.assert_close(out[0], (e_u[0] + (e_star[0] + e_star[2]) / 2) / 2)
    torch.testing.assert_close(out[1], (e_u[1] + e_star[2]) / 2)
    torch.testing.assert_close(out[2], e_u[2])  # in no group
    torch.testing.assert_close(out[3], (e_u[3] + e_star[1]) / 2)


@pytest.mark.parametrize(
    "module", [SelfGating(6, 3), FullyConnected(6, 3, 1), FullyConnected(6, 3, 2)]
)
def test_disentanglers_shape(module: torch.nn.Module) -> None:
    out = module(torch.randn(10, 6))
    assert out.shape == (10, 3, 6)


def test_self_gating_matches_equation_1() -> None:
    gate = SelfGating(4, 2)
    e = torch.randn(3, 4)
    out = gate(e)
    for n in range(2):
        torch.testing.assert_close(out[:, n], e * torch.sigmoid(e @ gate.weight[n] + gate.bias[n]))
