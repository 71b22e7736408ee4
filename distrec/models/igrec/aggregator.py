"""Interest aggregator (paper III-B): attention readout per group and interest, then interest
selection by Gumbel-softmax.

Group membership is an edge list (``edge_group[E]``, ``edge_user[E]``), so memory is
O(E * M * D) for the edges actually read; a member cap bounds E per group.
Shapes: G groups, E member edges, M interests, D dim.
"""

from __future__ import annotations

import torch


def segment_softmax(logits: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``logits`` [E, ...] within each segment (rows with equal ``segment`` [E]).

    Returns weights [E, ...] that sum to 1 over the rows of every non-empty segment.
    """
    index = segment.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    shape = (num_segments, *logits.shape[1:])
    # Subtract each segment's max for stability; the max carries no gradient.
    seg_max = torch.full(shape, float("-inf"), dtype=logits.dtype, device=logits.device)
    seg_max = seg_max.scatter_reduce(0, index, logits.detach(), reduce="amax", include_self=True)
    ex = torch.exp(logits - seg_max.gather(0, index))
    denom = torch.zeros(shape, dtype=logits.dtype, device=logits.device).scatter_add(0, index, ex)
    return ex / denom.gather(0, index)


def attention_readout(
    member_interests: torch.Tensor,
    edge_group: torch.Tensor,
    num_groups: int,
    w_att: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3-4: ``i_n(g) = sum_u softmax_u(W_att i_n(u)) i_n(u)`` over g's members.

    member_interests [E, M, D] (row e = the interests of member ``edge_user[e]``),
    edge_group [E], w_att [D] -> (readout [G, M, D], weights [E, M]). Groups with no edge
    read out zeros.
    """
    logits = member_interests @ w_att  # [E, M]
    weights = segment_softmax(logits, edge_group, num_groups)
    out = torch.zeros(
        (num_groups, *member_interests.shape[1:]),
        dtype=member_interests.dtype,
        device=member_interests.device,
    )
    index = edge_group.view(-1, 1, 1).expand_as(member_interests)
    return out.scatter_add(0, index, weights.unsqueeze(-1) * member_interests), weights


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float,
    *,
    hard: bool = False,
    noise: bool = True,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 5-6 over the last dim: ``softmax((logits + G) / tau)``, G ~ Gumbel(0, 1).

    ``hard`` returns the one-hot argmax in the forward pass with the soft gradient
    (straight-through). ``noise=False`` drops G (deterministic evaluation). The noise comes from
    ``generator`` so every rank draws the same sample for a step, or is given as ``uniform``
    (U(0, 1) of logits' shape: sampled mode draws it for every group and keeps the rows of the
    batch's groups, so a group's noise does not depend on the batch). logits [..., M] -> [..., M].
    """
    if noise:
        u = (
            uniform.to(logits.dtype)
            if uniform is not None
            else torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
        ).to(logits.device)
        # Clamp keeps log(-log(u)) finite at u in {0, 1}.
        u = u.clamp(torch.finfo(logits.dtype).tiny, 1.0 - torch.finfo(logits.dtype).eps)
        logits = logits - torch.log(-torch.log(u))
    soft = torch.softmax(logits / tau, dim=-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


def select_interests(
    readout: torch.Tensor,
    e_g: torch.Tensor,
    tau: float,
    *,
    hard: bool,
    noise: bool,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6-7: ``w = gumbel_softmax(e_g . i_n)``, ``i*_g = sum_n w_n i_n``.

    readout [G, M, D], e_g [G, D] -> (i*_g [G, D], w [G, M]). The paper writes log(psi) with
    psi = e_g . i_n, which is undefined for negative dot products; like the authors' code we
    use psi itself as the logit.
    """
    psi = torch.einsum("gmd,gd->gm", readout, e_g)
    w = gumbel_softmax(psi, tau, hard=hard, noise=noise, generator=generator, uniform=uniform)
    return torch.einsum("gm,gmd->gd", w, readout), w


def cap_members(
    edge_group: torch.Tensor,
    edge_user: torch.Tensor,
    num_groups: int,
    cap: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep at most ``cap`` members per group, a uniform sample without replacement.

    The attention softmax is renormalised over the kept members, so the readout is a
    self-normalised estimate of the full one; with ``cap`` >= every group size it is exact
    (the edge list comes back unchanged). cap <= 0 keeps all. Returns (edge_group, edge_user).
    """
    if cap <= 0:
        return edge_group, edge_user
    sizes = torch.bincount(edge_group, minlength=num_groups)
    if int(sizes.max()) <= cap:
        return edge_group, edge_user
    # Random key per edge; rank edges inside their group by key and keep the first ``cap``.
    keys = torch.rand(edge_group.shape, generator=generator, dtype=torch.float64)
    order = torch.argsort(edge_group.to(torch.float64) * 2.0 + keys.to(edge_group.device))
    starts = torch.cumsum(sizes, 0) - sizes
    rank_in_group = torch.arange(len(order), device=order.device) - starts[edge_group[order]]
    keep = order[rank_in_group < cap]
    keep = keep.sort().values
    return edge_group[keep], edge_user[keep]
