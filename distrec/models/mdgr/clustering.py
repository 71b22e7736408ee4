"""Dynamic graph clustering of MDGR (paper 3.4), batched over whole batches of sequences.

Everything here works on padded tensors with a validity mask, with no Python loop over
sequences, so it runs the same on CPU and GPU. Shapes: B sequences, L positions, D dim,
K clusters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_centroids(x: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """K initial centroids per sequence: the items at K evenly spaced valid positions.

    Deterministic (no RNG), so a batch and its sequences clustered one by one agree.
    x [B, L, D], mask [B, L] -> [B, K, D].
    """
    n = mask.sum(dim=1).clamp(min=1)  # [B]
    j = torch.arange(k, device=x.device)
    # j-th pick: the floor(j * n / K)-th valid item; valid items are left-aligned by the data layer,
    # but do not rely on it: map the rank among valid items back to a position.
    rank = (j.unsqueeze(0) * n.unsqueeze(1)) // k  # [B, K]
    cum = mask.long().cumsum(dim=1) - 1  # rank of each valid position
    cum = torch.where(mask, cum, torch.full_like(cum, -1))
    hit = cum.unsqueeze(1) == rank.unsqueeze(2)  # [B, K, L]
    pos = hit.float().argmax(dim=2)  # [B, K]
    return torch.gather(x, 1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def kmeans(
    x: torch.Tensor, mask: torch.Tensor, k: int, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd k-means on the valid items of every sequence.

    x [B, L, D], mask [B, L] -> (labels [B, L] int64 in [0, K), -1 on padding; centroids [B, K, D]).
    Assignments are discrete (no gradient flows through them); centroids are recomputed from x
    with the final labels, so gradients do flow into the cluster vectors. A cluster that loses
    all members keeps its previous centroid.
    """
    xd = x.detach()
    c = init_centroids(xd, mask, k)
    labels = torch.zeros(mask.shape, dtype=torch.long, device=x.device)
    for _ in range(max(steps, 1)):
        dist = torch.cdist(xd, c)  # [B, L, K]
        labels = dist.argmin(dim=2)
        onehot = F.one_hot(labels, k).float() * mask.unsqueeze(-1)  # [B, L, K]
        count = onehot.sum(dim=1)  # [B, K]
        new_c = onehot.transpose(1, 2) @ xd / count.clamp(min=1).unsqueeze(-1)
        c = torch.where(count.unsqueeze(-1) > 0, new_c, c)
    onehot = F.one_hot(labels, k).float() * mask.unsqueeze(-1)
    count = onehot.sum(dim=1)
    centroids = onehot.transpose(1, 2) @ x / count.clamp(min=1).unsqueeze(-1)
    labels = torch.where(mask, labels, torch.full_like(labels, -1))
    return labels, centroids


def weighted_cosine(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. 7-8: mean over delta heads of cos(w_h * x_i, w_h * x_j). x [B, L, D], w [delta, D] -> [B, L, L]."""
    xh = F.normalize(x.unsqueeze(1) * w[None, :, None, :], dim=-1)  # [B, delta, L, D]
    return (xh @ xh.transpose(-1, -2)).mean(dim=1)


def sparsify_top(sim: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 9, relative ranking: keep exactly the ceil(gamma * n^2) largest entries among the
    n x n valid pairs of each sequence (ties broken by position). sim [B, L, L] -> bool [B, L, L]."""
    b, length, _ = sim.shape
    pair = mask.unsqueeze(2) & mask.unsqueeze(1)
    n = mask.sum(dim=1)
    keep = torch.ceil(gamma * n.double() ** 2 - 1e-9).long().clamp(max=n**2)  # [B]
    flat = sim.masked_fill(~pair, float("-inf")).reshape(b, -1)
    # A partial top-k instead of a full sort: only the first max(keep) ranks are needed.
    k_max = int(keep.max()) if b else 0
    order = torch.topk(flat, k_max, dim=1, sorted=True).indices  # [B, k_max]
    rank = torch.full_like(flat, flat.shape[1], dtype=torch.long)
    rank.scatter_(1, order, torch.arange(k_max, device=sim.device).expand(b, -1))
    return (rank < keep.unsqueeze(1)).reshape(b, length, length) & pair


class ClusterAttention(nn.Module):
    """Cluster-aware graph attention (eq. 10-13), H heads averaged.

    alpha_i = MLP([W_c x_i || c_i || W_c x_i * c_i]) scores the target node with its cluster
    vector c_i; beta_j = MLP([W_q x_j || t || W_q x_j * t]) scores the source node against the
    target item t. E_ij = softmax_j(LeakyReLU(alpha_i + beta_j)) over the sub-graph neighbours
    of i. The LeakyReLU is GAT's additive form: without a nonlinearity alpha_i would cancel in
    a softmax over j and the cluster term would have no effect.

    ``edge`` [B, L, L] (optional) is added to the logits of the kept edges: the learned
    weighted-cosine strength L_ij. The paper learns "the edge weights in the adjacency matrix
    through metric learning" but its eq. 9 binarises A, which would leave the metric weights
    without any gradient; carrying L_ij into the attention keeps eq. 9's sparsity pattern and
    lets the metric learn.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.w_c = nn.Linear(dim, dim * heads, bias=False)
        self.w_q = nn.Linear(dim, dim * heads, bias=False)
        self.mlp_a = nn.ModuleList(_score_mlp(dim) for _ in range(heads))
        self.mlp_b = nn.ModuleList(_score_mlp(dim) for _ in range(heads))

    def coefficients(
        self,
        x: torch.Tensor,
        cluster_vec: torch.Tensor,
        target: torch.Tensor,
        adj: torch.Tensor,
        edge: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """E [B, H, L, L] (rows sum to 1 over sources j where node i has a neighbour).

        x [B, L, D] nodes; cluster_vec [B, L, D] the cluster vector of each node; target [B, D];
        adj bool [B, L, L] (i attends to j where adj[i, j]).
        """
        b, length, d = x.shape
        xc = self.w_c(x).view(b, length, self.heads, d)
        xq = self.w_q(x).view(b, length, self.heads, d)
        scores = []
        for h in range(self.heads):
            a = self.mlp_a[h](torch.cat([xc[:, :, h], cluster_vec, xc[:, :, h] * cluster_vec], -1))
            t = target.unsqueeze(1).expand(-1, length, -1)
            s = self.mlp_b[h](torch.cat([xq[:, :, h], t, xq[:, :, h] * t], -1))
            scores.append(a + s.transpose(1, 2))  # [B, L(i), 1] + [B, 1, L(j)]
        e = F.leaky_relu(torch.stack(scores, dim=1), 0.2)  # [B, H, L, L]
        if edge is not None:
            e = e + edge.unsqueeze(1)
        # Every real node has a self loop, so only padding rows are empty; a finite fill keeps
        # their softmax defined, and the mask zeroes them.
        e = e.masked_fill(~adj.unsqueeze(1), -1e9)
        return torch.softmax(e, dim=-1) * adj.any(dim=-1, keepdim=True).unsqueeze(1)

    def forward(
        self,
        x: torch.Tensor,
        cluster_vec: torch.Tensor,
        target: torch.Tensor,
        adj: torch.Tensor,
        edge: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 13: x'_i = mean_h sum_j E^h_ij x_j. Returns [B, L, D]."""
        att = self.coefficients(x, cluster_vec, target, adj, edge)
        return (att @ x.unsqueeze(1)).mean(dim=1)


def _score_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3 * dim, dim), nn.Tanh(), nn.Linear(dim, 1))


class DynamicGraphClustering(nn.Module):
    """m cycles of: cluster -> weighted-cosine graph -> top gamma n^2 sparsification restricted to
    same-cluster pairs (the interest sub-graphs) plus self loops -> cluster-aware attention update;
    then a final clustering. Returns (x' [B, L, D], labels [B, L], centroids [B, K, D])."""

    def __init__(
        self,
        dim: int,
        k: int,
        iterations: int,
        sim_heads: int,
        gamma: float,
        heads: int,
        kmeans_steps: int,
    ) -> None:
        super().__init__()
        self.k, self.iterations, self.gamma, self.kmeans_steps = k, iterations, gamma, kmeans_steps
        self.sim_w = nn.Parameter(torch.ones(sim_heads, dim) + 0.1 * torch.randn(sim_heads, dim))
        self.attn = ClusterAttention(dim, heads)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device).unsqueeze(0)
        for _ in range(self.iterations):
            labels, cent = kmeans(x, mask, self.k, self.kmeans_steps)
            sim = weighted_cosine(x, self.sim_w)
            adj = sparsify_top(sim, mask, self.gamma)
            same = labels.unsqueeze(2) == labels.unsqueeze(1)
            adj = (adj & same) | (eye & mask.unsqueeze(2))
            cvec = torch.gather(
                cent, 1, labels.clamp(min=0).unsqueeze(-1).expand(-1, -1, x.shape[-1])
            )
            x = self.attn(x, cvec, target, adj, sim) * mask.unsqueeze(-1)
        labels, cent = kmeans(x, mask, self.k, self.kmeans_steps)
        return x, labels, cent


def last_in_cluster(
    x: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interest z_j = the representation of the most recent item of cluster j (paper 3.4.3).

    x [B, L, D] with positions in chronological order, labels [B, L] (-1 on padding)
    -> (z [B, K, D], present bool [B, K]: cluster j has at least one item).
    """
    b, length, d = x.shape
    pos = torch.arange(length, device=x.device).expand(b, length)
    onehot = labels.unsqueeze(-1) == torch.arange(k, device=x.device)  # [B, L, K]
    last = (
        torch.where(onehot, pos.unsqueeze(-1), torch.full_like(pos.unsqueeze(-1), -1))
        .max(dim=1)
        .values
    )
    present = last >= 0
    z = torch.gather(x, 1, last.clamp(min=0).unsqueeze(-1).expand(-1, -1, d))
    return z * present.unsqueeze(-1), present


def gamma_count(n: int, gamma: float) -> int:
    """Number of entries :func:`sparsify_top` keeps for n valid items."""
    return min(math.ceil(gamma * n * n - 1e-9), n * n)
