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
        # The logits are held as [B, F, L] (interest-major): the softmax over the F = 4
        # interests then runs across contiguous history positions instead of along a last dim
        # of 4 (about 9x faster on CPU, the largest op of a step after the matrix products),
        # and both products are plain bmm's without a permuted copy. Same values.
        if noise is None:
            c = h.new_zeros(bsz, self.num_interests, length)
        else:
            c = self.noise_std * noise[:, :length, : self.num_interests].to(h.dtype).transpose(1, 2)
        maskf = mask.to(h.dtype).unsqueeze(1)  # [B, 1, L]: padded items route nowhere
        # MIND/ComiRec stop the gradient through the routing logits; we let it flow by default
        # (routing_grad) so that routing regularisers such as MIR-RV have something to act on.
        h_route = h if self.routing_grad else h.detach()
        for _ in range(self.iters):
            b = torch.softmax(c, dim=1) * maskf
            v = squash(torch.bmm(b, h_route))  # [B, F, D]
            c = c + torch.bmm(v, h_route.transpose(1, 2))  # e_i . v_f, [B, F, L]
        b = torch.softmax(c, dim=1) * maskf
        v = squash(torch.bmm(b, h))
        return v, b.transpose(1, 2)


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
        # a multiply-add, not an einsum: the einsum runs as a bmm of B tiny matrices (2x slower)
        logits = (interests * masked_mean(h, mask).unsqueeze(1)).sum(-1)
        return torch.softmax(logits, dim=-1)
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
    if readout != "max":  # sum_f q_f . e = (sum_f q_f) . e: a multiply-add, no bmm of B tiny GEMMs
        return (query.sum(1).unsqueeze(1) * items).sum(-1)
    return torch.einsum("bfd,bcd->bfc", query, items).max(dim=1).values


def pad_jagged(
    values: torch.Tensor, lengths: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned padding of jagged rows: values [nnz, D], lengths [B] -> ([B, L, D], mask [B, L]).

    One ``index_select`` of ``values`` with a zero row appended (padding reads that row): its
    backward is an ``index_add`` instead of the boolean-mask scatter/gather pair, which is
    several times slower on CPU."""
    bsz = lengths.numel()
    lengths = lengths.to(torch.long).clamp_max(max_len)
    pos = torch.arange(max_len, device=values.device).unsqueeze(0)
    mask = pos < lengths.unsqueeze(1)
    starts = torch.cumsum(lengths, 0) - lengths  # rows of values are the valid slots in order
    n = int(lengths.sum())
    src = torch.where(mask, starts.unsqueeze(1) + pos, n)  # n = the appended zero row
    padded = torch.cat([values[:n], values.new_zeros(1, values.shape[-1])])
    return padded.index_select(0, src.view(-1)).view(bsz, max_len, -1), mask


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
