"""Dynamic graph clustering of MDGR (paper 3.4), batched over whole batches of sequences and
over the C target items (eq. 11) of each sequence.

Everything here works on padded tensors with a validity mask, with no Python loop over
sequences, candidates or heads, so it runs the same on CPU and GPU. Shapes: B sequences,
C target items per sequence, L positions, D dim, K clusters, H attention heads.

Cost structure (why the code is shaped this way): the target t enters only eq. 11, and there
only through a D x D matrix per (target, head) that is fixed over the m cycles (see
:meth:`ClusterAttention.target_terms`). The first cycle's clustering, graph and cluster scores
(eq. 7-10) do not depend on t, so they are computed once per sequence and only the attention
update fans out to the C targets; later cycles cluster the target-specific outputs.
"""

from __future__ import annotations

import math
from typing import cast

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
    x: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    steps: int,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd k-means on the valid items of every sequence.

    x [B, L, D], mask [B, L] -> (labels [B, L] int64 in [0, K), -1 on padding; centroids [B, K, D]).
    ``init`` [B, L] (optional, labels of an earlier clustering of the same nodes, -1 on padding):
    start from the means of x over those clusters (a cluster without members takes its
    :func:`init_centroids` pick) instead of the evenly spaced items.
    Assignments are discrete (no gradient flows through them); centroids are recomputed from x
    with the final labels, so gradients do flow into the cluster vectors. A cluster that loses
    all members keeps its previous centroid.

    Two exact shortcuts (the result is bit for bit that of ``steps`` full Lloyd steps with
    ``torch.cdist``): the distances are cdist's own matrix-product form with the x side built
    once per call, not once per step; and the loop stops when no label changes, since the
    centroids, and so every later step, are then a fixed point.
    """
    xd = x.detach()
    c = init_centroids(xd, mask, k)
    labels = torch.zeros(mask.shape, dtype=torch.long, device=x.device)
    maskk = mask.unsqueeze(-1)
    ks = torch.arange(k, device=x.device)
    if init is not None:
        # padding (-1) matches no cluster
        warm, count = _cluster_means((init.unsqueeze(-1) == ks).to(x.dtype), xd)
        c = torch.where(count.unsqueeze(-1) > 0, warm, c)
    # cdist(xd, c) = sqrt(clamp([-2x, |x|^2, 1] @ [c, 1, |c|^2]^T)): its matmul path, which it
    # takes when L > 25 or K > 25 (below that it computes differences, and so do we)
    mm = mask.shape[1] > 25 or k > 25
    xn = xd.pow(2).sum(-1, keepdim=True)
    x_side = torch.cat([xd.mul(-2), xn, torch.ones_like(xn)], dim=-1) if mm else xd
    prev: torch.Tensor | None = None
    for _ in range(max(steps, 1)):
        if mm:
            cn = c.pow(2).sum(-1, keepdim=True)
            c_side = torch.cat([c, torch.ones_like(cn), cn], dim=-1)
            dist = (x_side @ c_side.mT).clamp_min_(1e-30).sqrt_()
        else:
            dist = torch.cdist(xd, c)
        labels = dist.argmin(dim=2)
        if prev is not None and torch.equal(labels, prev):
            break  # same labels -> same centroids -> same labels: the remaining steps change nothing
        onehot = ((labels.unsqueeze(-1) == ks) & maskk).to(x.dtype)  # [B, L, K]
        new_c, count = _cluster_means(onehot, xd)
        c = torch.where(count.unsqueeze(-1) > 0, new_c, c)
        prev = labels
    centroids, _ = _cluster_means(((labels.unsqueeze(-1) == ks) & maskk).to(x.dtype), x)
    labels = torch.where(mask, labels, torch.full_like(labels, -1))
    return labels, centroids


def _cluster_means(onehot: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """onehot [B, L, K], x [B, L, D] -> (mean of x over each cluster [B, K, D], zero for an empty
    one; member count [B, K])."""
    count = onehot.sum(dim=1)
    return onehot.transpose(1, 2) @ x / count.clamp(min=1).unsqueeze(-1), count


def weighted_cosine(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. 7-8: mean over delta heads of cos(w_h * x_i, w_h * x_j). x [B, L, D], w [delta, D] -> [B, L, L].

    The norms |w_h * x_i| come from one small matmul (x^2 @ (w^2)^T) instead of a normalize of
    the [B, delta, L, D] block, whose backward dominated the step; the heads' unit vectors lie
    side by side ([B, L, delta * D]) so the sum over heads is one inner product."""
    inv = ((x * x) @ (w * w).T).clamp(min=1e-24).rsqrt()  # 1 / max(|w_h x_i|, 1e-12) [B, L, delta]
    xh = (x.unsqueeze(2) * w * inv.unsqueeze(-1)).flatten(2)  # [B, L, delta * D]
    return cast(torch.Tensor, _Gram.apply(xh)) / w.shape[0]


class _Gram(torch.autograd.Function):
    """a @ a^T for a [B, L, F], with the backward (G + G^T) @ a: one [L, L] x [L, F] product
    instead of the two autograd takes for a product of two operands (a and a^T)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        return a @ a.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        return (grad + grad.transpose(1, 2)) @ a


def sparsify_top(sim: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 9, relative ranking: keep exactly the ceil(gamma * n^2) largest entries among the
    n x n valid pairs of each sequence. sim [B, L, L] -> bool [B, L, L]."""
    b, length, _ = sim.shape
    sim = sim.detach()  # the selection is discrete: no autograd record of the masked copy
    pair = mask.unsqueeze(2) & mask.unsqueeze(1)
    n = mask.sum(dim=1)
    keep = torch.ceil(gamma * n.double() ** 2 - 1e-9).long().clamp(max=n**2)  # [B]
    flat = sim.masked_fill(~pair, float("-inf")).reshape(b, -1)
    k_max = int(keep.max()) if b else 0
    if b and int(keep.min()) == k_max:  # all sequences equally long (the usual case): no ranks
        order = torch.topk(flat, k_max, dim=1, sorted=False).indices
        out = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
        return out.reshape(b, length, length) & pair
    # A partial top-k instead of a full sort: only the first max(keep) ranks are needed.
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

    The MLPs' first layers are applied blockwise (the same parameters as the concatenation,
    rearranged): with [A1 | A2 | A3] the three D-column blocks,
    A1 W_c x + A2 c + A3 (W_c x * c) (A2 c once per cluster, not per node) and
    (B1 + B3 diag(t)) W_q x + B2 t, whose D x D matrix is built once per target.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.w_c = nn.Linear(dim, dim * heads, bias=False)
        self.w_q = nn.Linear(dim, dim * heads, bias=False)
        self.mlp_a = nn.ModuleList(_score_mlp(dim) for _ in range(heads))
        self.mlp_b = nn.ModuleList(_score_mlp(dim) for _ in range(heads))

    def _blocks(self, mlps: nn.ModuleList) -> list[torch.Tensor]:
        """First-layer blocks [H, D, D] x 3, first bias [H, D], output weight [H, D], bias [H]."""
        d = self.w_c.in_features
        first = [cast(nn.Linear, cast(nn.Sequential, m)[0]) for m in mlps]
        second = [cast(nn.Linear, cast(nn.Sequential, m)[2]) for m in mlps]
        w1 = torch.stack([lin.weight for lin in first])  # [H, D, 3D]
        b1 = torch.stack([lin.bias for lin in first])
        w2 = torch.stack([lin.weight.reshape(d) for lin in second])
        b2 = torch.stack([lin.bias.reshape(()) for lin in second])
        return [w1[..., :d], w1[..., d : 2 * d], w1[..., 2 * d :], b1, w2, b2]

    def prepare(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Everything of eq. 10-11 that is fixed over the m cycles, for targets [N, C, D]: the
        alpha MLP's blocks, and eq. 11's pre-activation M x_j + m0 per (target, head) with
        M [N, C, H, D, D], m0 [N, C, H, D], plus its output layer."""
        d, h = self.w_q.in_features, self.heads
        b1_, b2_, b3_, bias, bv, bb = self._blocks(self.mlp_b)
        wq = self.w_q.weight.view(h, d, d)  # [H, D(out), D(in)]
        mat = (b1_ + b3_ * target[:, :, None, None, :]) @ wq  # [N, C, H, D, D]
        m0 = torch.einsum("hfe,nce->nchf", b2_, target) + bias
        return [*self._blocks(self.mlp_a), mat, m0, bv, bb]

    @staticmethod
    def fan_out(prep: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`prepare` for N sequences x C targets -> for N * C node sets x 1 target."""
        *shared, mat, m0, bv, bb = prep
        return [*shared, mat.flatten(0, 1).unsqueeze(1), m0.flatten(0, 1).unsqueeze(1), bv, bb]

    def _softmax(
        self,
        x: torch.Tensor,
        cent: torch.Tensor,
        labels: torch.Tensor,
        prep: list[torch.Tensor],
        adj: torch.Tensor,
        edge: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`coefficients` before the zeroing of empty (padding) rows."""
        n, length, d = x.shape
        h = self.heads
        a1, a2, a3, abias, av, ab, mat, m0, bv, bb = prep
        k = cent.shape[1]
        xc = (x @ self.w_c.weight.T).view(n, length, h, d)  # W_c x per head
        # each node's cluster as a one-hot matmul (padding, label -1, gets zeros; its row is
        # masked downstream): cheaper than gather / scatter_add over [N, L, H, D] backwards
        member = (labels.unsqueeze(-1) == torch.arange(k, device=x.device)).to(x.dtype)
        cvec = member @ cent  # [N, L, D]
        c_terms = torch.einsum("hfe,nke->nkhf", a2, cent).flatten(2)  # A2 c, once per cluster
        # A1 (W_c x) + A3 (W_c x * c) as one product with [A1 | A3] on [W_c x || W_c x * c]
        both = torch.cat([xc, xc * cvec.unsqueeze(2)], dim=-1)  # [N, L, H, 2D]
        pre_a = (
            torch.einsum("hfe,nlhe->nlhf", torch.cat([a1, a3], dim=-1), both)
            + (member @ c_terms).view(n, length, h, d)
            + abias
        )
        alpha = (torch.tanh(pre_a) * av).sum(-1) + ab  # [N, L, H]
        pre_b = torch.einsum("nchfd,nld->nchlf", mat, x) + m0.unsqueeze(3)
        beta = (torch.tanh(pre_b) * bv[:, None, :]).sum(-1) + bb[:, None]  # [N, C, H, L]
        # alpha made [N, H, L] contiguous first: broadcasting the transposed view gave the
        # [N, C, H, L, L] logits an [N, C, L, H, L] memory layout, which softmax (and its
        # backward) copied; same values
        alpha = alpha.transpose(1, 2).contiguous()
        e = alpha[:, None, :, :, None] + beta.unsqueeze(3)  # [N, C, H, L(i), L(j)]
        # In place: leaky_relu's backward reads its output, which nothing below overwrites.
        e = F.leaky_relu(e, 0.2, inplace=True)
        # Edge strengths and the sparsity mask as one additive [N, L, L] term, built once per
        # node set and broadcast over the C x H logit blocks (one pass over them, not two).
        # Every real node has a self loop, so only padding rows are empty; a finite fill keeps
        # their softmax defined, and the caller zeroes them.
        bias = torch.zeros_like(adj, dtype=e.dtype) if edge is None else edge
        return torch.softmax(e + bias.masked_fill(~adj, -1e9)[:, None, None], dim=-1)

    def coefficients(
        self,
        x: torch.Tensor,
        cent: torch.Tensor,
        labels: torch.Tensor,
        prep: list[torch.Tensor],
        adj: torch.Tensor,
        edge: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """E [N, C, H, L, L] for the C targets of each of N node sets (rows sum to 1 over
        sources j where node i has a neighbour, 0 where it has none).

        x [N, L, D] nodes; cent [N, K, D] cluster vectors and labels [N, L] each node's cluster
        (-1 on padding); prep: :meth:`prepare` of the targets [N, C, D]; adj bool [N, L, L]
        (i attends to j where adj[i, j]); edge [N, L, L].
        """
        e = self._softmax(x, cent, labels, prep, adj, edge)
        return e * adj.any(dim=-1)[:, None, None, :, None]

    def forward(
        self,
        x: torch.Tensor,
        cent: torch.Tensor,
        labels: torch.Tensor,
        prep: list[torch.Tensor],
        adj: torch.Tensor,
        edge: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 13: x'_i = mean_h sum_j E^h_ij x_j. Returns [N, C, L, D] (the mean over heads is
        taken on E, before the product with x), zero on nodes without neighbours (padding):
        the row mask is applied to the [L, D] output, not the [H, L, L] coefficients."""
        att = self._softmax(x, cent, labels, prep, adj, edge).mean(dim=2)  # [N, C, L, L]
        out = att @ x.unsqueeze(1)
        rows = adj.any(dim=-1)  # [N, L]
        return out if bool(rows.all()) else out * rows[:, None, :, None]


def _score_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3 * dim, dim), nn.Tanh(), nn.Linear(dim, 1))


class DynamicGraphClustering(nn.Module):
    """m cycles of: cluster -> weighted-cosine graph -> top gamma n^2 sparsification restricted to
    same-cluster pairs (the interest sub-graphs) plus self loops -> cluster-aware attention update;
    then a final clustering.

    forward(x [B, L, D], mask [B, L], target [B, C, D]) -> (x' [B, C, L, D], labels [B, C, L],
    centroids [B, C, K, D]): one clustering per (sequence, target) as eq. 11 defines it, with
    the first cycle's target-free part shared by a sequence's C targets. A target [B, D] (one per
    sequence) gives the same without the C axis.

    ``aware_cycles`` (not the paper, which is -1: every cycle): with ``free`` [B, D] given, only
    the last ``aware_cycles`` cycles use the C targets in eq. 11; the earlier ones use ``free``
    (a target-free query, one per sequence), so they and the first target-aware cycle's graph are
    computed once per sequence and only the last cycles fan out to the targets.

    ``kmeans_warm`` (not the paper, which re-clusters each cycle; default False): every
    clustering after the first starts from the previous cycle's labels (:func:`kmeans`
    ``init``); with the exact stop on unchanged labels it then usually needs fewer Lloyd steps."""

    def __init__(
        self,
        dim: int,
        k: int,
        iterations: int,
        sim_heads: int,
        gamma: float,
        heads: int,
        kmeans_steps: int,
        aware_cycles: int = -1,
        kmeans_warm: bool = False,
    ) -> None:
        super().__init__()
        self.k, self.iterations, self.gamma, self.kmeans_steps = k, iterations, gamma, kmeans_steps
        self.kmeans_warm = kmeans_warm
        if aware_cycles != -1 and not 1 <= aware_cycles <= max(iterations, 1):
            raise ValueError(f"aware_cycles must be -1 or in 1..{iterations}, got {aware_cycles}")
        self.aware_cycles = aware_cycles
        self.sim_w = nn.Parameter(torch.ones(sim_heads, dim) + 0.1 * torch.randn(sim_heads, dim))
        self.attn = ClusterAttention(dim, heads)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        target: torch.Tensor,
        free: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        single = target.dim() == 2
        tg = target.unsqueeze(1) if single else target
        b, c = tg.shape[:2]
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device).unsqueeze(0)
        # the first cycle whose eq. 11 sees the C targets; the ones before it use `free`
        first, free_prep = 0, []
        if free is not None and self.aware_cycles > 0:
            first = max(self.iterations - self.aware_cycles, 0)
            free_prep = self.attn.prepare(free.unsqueeze(1)) if first else []
        prep = self.attn.prepare(tg) if self.iterations else []
        labels: torch.Tensor | None = None
        for cycle in range(self.iterations):
            init = labels if self.kmeans_warm else None
            labels, cent = kmeans(x, mask, self.k, self.kmeans_steps, init)
            sim = weighted_cosine(x, self.sim_w)
            adj = sparsify_top(sim, mask, self.gamma)
            same = labels.unsqueeze(2) == labels.unsqueeze(1)
            adj = (adj & same) | (eye & mask.unsqueeze(2))
            # padding nodes have no neighbour (not even a self loop): attn zeroes them
            x = self.attn(x, cent, labels, prep if cycle >= first else free_prep, adj, sim)
            x = x.flatten(0, 1)
            if cycle == first:  # from here on x depends on the target: one node set per pair
                mask = mask.repeat_interleave(c, dim=0)
                labels = labels.repeat_interleave(c, dim=0)
                prep = self.attn.fan_out(prep)
        init = labels if self.kmeans_warm else None
        labels, cent = kmeans(x, mask, self.k, self.kmeans_steps, init)
        if not self.iterations:  # nothing depended on the target: share the one clustering
            x, labels, cent = (t.repeat_interleave(c, dim=0) for t in (x, labels, cent))
        out = x.view(b, c, *x.shape[1:]), labels.view(b, c, -1), cent.view(b, c, *cent.shape[1:])
        return (out[0][:, 0], out[1][:, 0], out[2][:, 0]) if single else out


def last_in_cluster(
    x: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interest z_j = the representation of the most recent item of cluster j (paper 3.4.3).

    x [..., L, D] with positions in chronological order, labels [..., L] (-1 on padding)
    -> (z [..., K, D], present bool [..., K]: cluster j has at least one item).
    """
    length, d = x.shape[-2:]
    lead = labels.shape[:-1]
    x, labels = x.reshape(-1, length, d), labels.reshape(-1, length)
    pos = torch.arange(length, device=x.device).expand_as(labels)
    onehot = labels.unsqueeze(-1) == torch.arange(k, device=x.device)  # [N, L, K]
    last = (
        torch.where(onehot, pos.unsqueeze(-1), torch.full_like(pos.unsqueeze(-1), -1))
        .max(dim=1)
        .values
    )
    present = last >= 0
    z = torch.gather(x, 1, last.clamp(min=0).unsqueeze(-1).expand(-1, -1, d))
    z = z * present.unsqueeze(-1)
    return z.view(*lead, k, d), present.view(*lead, k)


def gamma_count(n: int, gamma: float) -> int:
    """Number of entries :func:`sparsify_top` keeps for n valid items."""
    return min(math.ceil(gamma * n * n - 1e-9), n * n)
