"""DisMIR's item-partition loss (Theorem 4) and the collapse regularisers of the ablations.

Shapes: B batch (anchors), K partition groups (= embedding dim D), N_o sampled negatives,
L history length, F interests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_


def partition_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative of Theorem 4's contrastive objective, for minimisation:

    ``-sum_i w_i log( exp(w_i . w_j) / (exp(w_i . w_j) + sum_{j'} exp(w_i . w_j')) ) / sum_i w_i``

    where ``j ~ M(. | S_i)`` is the co-occurrence positive of anchor ``i`` and ``j'`` the sampled
    negatives that stand in for the rest of the item set (the denominator over all items).

    anchor [B, K], positive [B, K]; negatives [N_o, K] (shared by the batch) or [B, N_o, K];
    weights [B] (e.g. 0 for anchors without a co-occurrence neighbour, or S_ij when the
    expectation over j is enumerated). Returns a scalar; 0 when no anchor has weight.
    """
    pos = (anchor * positive).sum(-1, keepdim=True)  # [B, 1]
    if negatives.dim() == 2:
        neg = anchor @ negatives.T  # [B, N_o]
    else:
        neg = torch.einsum("bk,bnk->bn", anchor, negatives)
    nll = -F_.log_softmax(torch.cat([pos, neg], dim=1), dim=1)[:, 0]
    if weights is None:
        return nll.mean()
    return (nll * weights).sum() / weights.sum().clamp_min(1e-12)


def routing_variance(routing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MIR-RV (REMI's routing-variance regulariser, paper eq. 1), averaged over the batch:
    ``||diag((B - mean_i B)^T (B - mean_i B))||^2`` with B the [L, F] item-to-interest routing.

    routing [B, L, F] (zero on padding), mask [B, L] bool -> scalar.
    """
    m = mask.to(routing.dtype).unsqueeze(-1)
    mean = (routing * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
    centred = (routing - mean) * m
    diag = (centred * centred).sum(1)  # [B, F] = diag(D)
    return (diag * diag).sum(-1).mean()


def backward_flow(
    interests: torch.Tensor, h: torch.Tensor, routing: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """MIR-BF (Re4's backward-flow re-contrast, paper eq. 2): for every interest the
    representative item is the history item routed to it most strongly; the interest is pulled to
    it and pushed from the user's other history items. We minimise the cross-entropy
    ``-log softmax_i(m_f . e_i)[rep_f]`` (eq. 2 writes the probability itself; the log is Re4's
    contrastive form and has useful gradients when the probability is small).

    interests [B, F, D], h [B, L, D], routing [B, L, F], mask [B, L] -> scalar.
    """
    logits = torch.einsum("bfd,bld->bfl", interests, h)
    logits = logits.masked_fill(~mask.unsqueeze(1), -1e9)
    rep = routing.masked_fill(~mask.unsqueeze(-1), -1.0).argmax(dim=1)  # [B, F]
    has = mask.any(dim=1)
    if not bool(has.any()):
        return interests.sum() * 0.0
    nll = F_.cross_entropy(logits[has].flatten(0, 1), rep[has].flatten(), reduction="mean")
    return nll
