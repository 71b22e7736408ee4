"""Multi-interest extractors and the interest read-out of DisMIR (paper sections 3.2 and 4.3).

Shapes: B batch, L history length (kappa, padded), F interests, D embedding dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import nn

from distrec.eval.chunked import multi_interest_scores


def squash(m: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Capsule squash ``v = |m|^2 / (|m|^2 + 1) * m / |m|`` along the last dim; |v| < 1."""
    sq = (m * m).sum(-1, keepdim=True)
    return m * (sq / (sq + 1.0) / torch.sqrt(sq + eps))


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the valid rows: h [B, L, D], mask [B, L] (bool) -> [B, D]; zero when none."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class CapsuleRouting(nn.Module):
    """Dynamic routing with the transformation matrix fixed to the identity (the paper's setting).

    ``b_if = softmax_f(c_if)`` (a distribution over the F interests for each history item),
    ``m_f = sum_i b_if e_i``, ``v_f = squash(m_f)``, ``c_if += e_i . v_f``. ``iters`` is the
    number of routing passes (updates of the logits; the paper uses one). With W = I and zero
    initial logits every interest would be identical, so the initial logits are the per-sample
    noise ``noise`` [B, L, F] (standard normal, scaled by ``noise_std``) as in MIND: the data
    adapter draws it from the step's seed, so it is reproducible and world-size invariant.

    Example::

        caps = CapsuleRouting(num_interests=4, iters=1)
        v, b = caps(h, mask, noise)   # v [B, 4, D] with |v| < 1; b [B, L, 4] rows sum to 1
    """

    def __init__(
        self, num_interests: int, iters: int = 1, noise_std: float = 1.0, routing_grad: bool = True
    ) -> None:
        super().__init__()
        self.num_interests = num_interests
        self.iters = iters
        self.noise_std = noise_std
        self.routing_grad = routing_grad

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, L, D], mask [B, L] bool, noise [B, L, F] or None -> (v [B, F, D], b [B, L, F])."""
        bsz, length, _ = h.shape
        if noise is None:
            c = h.new_zeros(bsz, length, self.num_interests)
        else:
            c = self.noise_std * noise[:, :length, : self.num_interests].to(h.dtype)
        maskf = mask.to(h.dtype).unsqueeze(-1)  # padded items route nowhere
        # MIND/ComiRec stop the gradient through the routing logits; we let it flow by default
        # (routing_grad) so that routing regularisers such as MIR-RV have something to act on.
        h_route = h if self.routing_grad else h.detach()
        for _ in range(self.iters):
            b = torch.softmax(c, dim=-1) * maskf
            v = squash(torch.einsum("blf,bld->bfd", b, h_route))
            c = c + torch.einsum("bld,bfd->blf", h_route, v)
        b = torch.softmax(c, dim=-1)
        v = squash(torch.einsum("blf,bld->bfd", b * maskf, h))
        return v, b * maskf


class SelfAttentiveExtractor(nn.Module):
    """ComiRec-SA multi-interest extractor: ``A = softmax_L(W2 tanh(W1 (e_i + p_i)))``,
    ``m_f = sum_i A_fi e_i``. The plug-in backbone of paper Table 5.

    h [B, L, D], mask [B, L] -> (m [B, F, D], routing A^T [B, L, F] whose columns sum to 1)
    """

    def __init__(
        self, dim: int, num_interests: int, max_len: int, hidden: int | None = None
    ) -> None:
        super().__init__()
        hidden = hidden or 4 * dim
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, num_interests, bias=False)

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = h.shape[1]
        logits = self.w2(torch.tanh(self.w1(h + self.pos[:length])))  # [B, L, F]
        logits = logits.masked_fill(~mask.unsqueeze(-1), -1e9)
        att = torch.softmax(logits, dim=1) * mask.to(h.dtype).unsqueeze(-1)
        return torch.einsum("blf,bld->bfd", att, h), att


def interest_weights(
    interests: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, readout: str
) -> torch.Tensor:
    """Per-interest weights a [B, F] of eq. (5).

    ``attention``: ``a_f = softmax_f(m_f . mean(e))`` (dynamic preference, DPI);
    ``mean``: 1/F (the "w/o DPI" ablation); ``max``: ones (the score takes the max instead).
    """
    bsz, f, _ = interests.shape
    if readout == "attention":
        return torch.softmax(torch.einsum("bfd,bd->bf", interests, masked_mean(h, mask)), dim=-1)
    if readout == "mean":
        return interests.new_full((bsz, f), 1.0 / f)
    if readout == "max":
        return interests.new_ones(bsz, f)
    raise ValueError(f"model.readout: {readout!r} is not one of attention, mean, max")


def score_items(query: torch.Tensor, items: torch.Tensor, readout: str) -> torch.Tensor:
    """Scores of weighted interests ``query`` [B, F, D] against items.

    items [N, D] -> [B, N] (full ranking) or items [B, C, D] -> [B, C] (per-sample candidates).
    Sum over interests for eq. (5) (``query`` already holds a_f * m_f), max for ComiRec.
    """
    if items.dim() == 2:  # full ranking: never build [B, F, N] (chunked evaluation)
        return multi_interest_scores(query, items, "max" if readout == "max" else "sum")
    per = torch.einsum("bfd,bcd->bfc", query, items)
    return per.max(dim=1).values if readout == "max" else per.sum(dim=1)


def pad_jagged(
    values: torch.Tensor, lengths: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned padding of jagged rows: values [nnz, D], lengths [B] -> ([B, L, D], mask [B, L])."""
    bsz = lengths.numel()
    lengths = lengths.to(torch.long).clamp_max(max_len)
    out = values.new_zeros(bsz, max_len, values.shape[-1])
    mask = torch.arange(max_len, device=values.device).unsqueeze(0) < lengths.unsqueeze(1)
    out[mask] = values[: int(lengths.sum())] if values.shape[0] else values
    return out, mask


def hard_negative_bpr(
    s_pos: torch.Tensor, s_neg: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Pairwise loss against the hardest of the candidates (paper 4.3, REMI-style):
    ``mean softplus(max_j s_neg_j - s_pos)`` = ``-mean log sigmoid(s_pos - s_hard)``.

    s_pos [B], s_neg [B, C], valid [B, C] bool (False for a candidate equal to the positive).
    """
    if valid is not None:
        s_neg = s_neg.masked_fill(~valid, -1e9)
    return F_.softplus(s_neg.max(dim=1).values - s_pos).mean()
