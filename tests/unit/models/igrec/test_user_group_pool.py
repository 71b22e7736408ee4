"""The sparse user-group pooling (IGRec fusion) against a gathered mean."""

from __future__ import annotations

import torch

from distrec.models.igrec.fusion import fuse_users, user_group_pool


def test_sparse_pool_equals_gathered_mean() -> None:
    torch.manual_seed(0)
    e_u, e_star = torch.randn(6, 4), torch.randn(3, 4)
    edge_user = torch.tensor([0, 0, 1, 2, 2, 2, 5])
    edge_group = torch.tensor([0, 1, 1, 0, 1, 2, 2])
    expected = e_u.clone()
    for u in range(6):
        gs = edge_group[edge_user == u]
        if len(gs):
            expected[u] = (e_u[u] + e_star[gs].mean(0)) / 2
    pool = user_group_pool(edge_user, edge_group, 6, 3)
    torch.testing.assert_close(fuse_users(e_u, e_star, edge_user, edge_group, pool), expected)
    torch.testing.assert_close(fuse_users(e_u, e_star, edge_user, edge_group), expected)
