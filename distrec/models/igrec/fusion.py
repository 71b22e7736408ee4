"""Interest-based group aggregation (paper III-C) and the interest regulariser (Eq. 15-17).

Shapes: U users, G groups, E membership edges, M interests, D dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fuse_groups(e_g: torch.Tensor, i_star: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``e*_g = (e_g + i*_g) / 2``; [G, D], [G, D] -> [G, D]."""
    return (e_g + i_star) / 2


def user_group_pool(
    edge_user: torch.Tensor, edge_group: torch.Tensor, num_users: int, num_groups: int
) -> torch.Tensor:
    """Sparse [U, G] mean-pooling matrix, ``P_ug = 1 / |G(u)|`` for every membership edge.

    ``P @ e_star`` pools with memory O(E + U * D); gathering ``e_star`` per membership edge
    would take O(E * D) (Steam-size groups give E ~ 500k edges).
    """
    count = torch.bincount(edge_user, minlength=num_users).to(torch.float32)
    w = 1.0 / count.clamp(min=1)[edge_user]
    idx = torch.stack([edge_user, edge_group])
    shape = (num_users, num_groups)
    return torch.sparse_coo_tensor(idx, w, shape, check_invariants=True).coalesce()


def fuse_users(
    e_u: torch.Tensor,
    e_star: torch.Tensor,
    edge_user: torch.Tensor,
    edge_group: torch.Tensor,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 9 with mean pooling: ``e_u_hat = (e_u + mean_{g in G(u)} e*_g) / 2``.

    e_u [U, D] (row u = user ``u`` of the local index space), e_star [G, D], edges map local
    users to groups. A user in no group keeps ``e_u`` (the paper leaves this case open; halving
    e_u would only shrink it). ``pool``: the [U, G] matrix of :func:`user_group_pool` for these
    edges, when the caller keeps it between steps. Returns [U, D].
    """
    if pool is None:
        pool = user_group_pool(edge_user, edge_group, e_u.shape[0], e_star.shape[0])
    mean = torch.sparse.mm(pool, e_star)
    has_group = torch.bincount(edge_user, minlength=e_u.shape[0]).unsqueeze(1) > 0
    return torch.where(has_group, (e_u + mean) / 2, e_u)


def interest_similarity(interests: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every interest pair p < q of every user (Eq. 16).

    interests [U, M, D] -> [U, M*(M-1)/2], pairs in row-major (p, q) order.
    """
    m = interests.shape[1]
    normed = F.normalize(interests, dim=-1, eps=1e-12)
    sim = normed @ normed.transpose(1, 2)  # [U, M, M]
    p, q = torch.triu_indices(m, m, offset=1, device=interests.device)
    return sim[:, p, q]


def interest_mask(sim: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 17: ``m = 1[|sim| >= t]`` (no gradient flows through the mask)."""
    return (sim.detach().abs() >= threshold).to(sim.dtype)


def interest_regularizer(
    interests: torch.Tensor, threshold: float, *, absolute: bool
) -> torch.Tensor:
    """Eq. 15 averaged over the U users given: ``mean_u sum_{p<q} m_pq Sim(i_p, i_q)``.

    ``absolute`` sums |Sim| (authors' code) instead of the signed Sim (paper). [U, M, D] -> [].
    A mean over users (not the paper's sum over all users) keeps the weight eta2 independent of
    the batch size.
    """
    if interests.shape[1] < 2 or interests.shape[0] == 0:
        return interests.sum() * 0.0
    sim = interest_similarity(interests)
    val = sim.abs() if absolute else sim
    return (interest_mask(sim, threshold) * val).sum(dim=1).mean()
