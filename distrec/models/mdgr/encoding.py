"""Item encoding of MDGR (paper 3.3): e_i = [p_i || tau(t_i) || rho(i)], then multi-head
self-attention with dropout and a two-layer FFN (eq. 4-6).

Shapes: B sequences, L positions, D item dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin/cos encoding of real ``values`` [...] -> [..., dim] (eq. 3, the Transformer formula)."""
    half = dim // 2
    freq = torch.exp(
        -math.log(10000.0)
        * torch.arange(half, device=values.device, dtype=torch.float32)
        / max(half, 1)
    )
    angles = values.float().unsqueeze(-1) * freq
    enc = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)
    if enc.shape[-1] < dim:  # odd dim: pad one zero column
        enc = torch.nn.functional.pad(enc, (0, dim - enc.shape[-1]))
    return enc


class ItemEncoder(nn.Module):
    """phi = FFN(Dropout(MHA([p || tau || rho]))) for every position (eq. 6); with
    ``residual`` (not in the paper) the item embedding p is added to phi.

    Args:
        dim: D, item embedding size and output size.
        time_dim, pos_dim: sizes of the sinusoidal encodings (0 disables one: MDGR-T / MDGR-P).
    Inputs: ``emb`` [B, L, D] item embeddings, ``days`` [B, L] days before the sequence's last
    item (recency: the newest item is 0), ``mask`` [B, L] True on real items.
    Output: [B, L, D].
    """

    def __init__(
        self,
        dim: int,
        time_dim: int,
        pos_dim: int,
        heads: int,
        dropout: float,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.time_dim, self.pos_dim, self.residual = time_dim, pos_dim, residual
        width = dim + time_dim + pos_dim
        heads = heads if width % heads == 0 else 1
        self.attn = nn.MultiheadAttention(width, heads, dropout=0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.ffn = nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Linear(dim, dim))

    def time_encoding(self, days: torch.Tensor) -> torch.Tensor:
        """tau [B, L, time_dim] (empty when time encodings are off)."""
        return sinusoid(days, self.time_dim) if self.time_dim else days.new_zeros(*days.shape, 0)

    def forward(self, emb: torch.Tensor, days: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, _ = emb.shape
        parts = [emb]
        if self.time_dim:
            parts.append(self.time_encoding(days))
        if self.pos_dim:
            pos = torch.arange(length, device=emb.device).expand(b, length)
            parts.append(sinusoid(pos, self.pos_dim))
        e = torch.cat(parts, dim=-1)
        # The paper's mask M is all ones between real items; padding is masked out as keys.
        # A fully padded row (empty sequence) would give NaN, so it attends to position 0.
        key_pad = ~mask
        key_pad[:, 0] &= mask.any(dim=1)
        out, _ = self.attn(e, e, e, key_padding_mask=key_pad, need_weights=False)
        phi = self.ffn(self.drop(out))
        if self.residual:  # off by default: eq. 6 has none (config model.encoder_residual)
            phi = phi + emb
        return phi * mask.unsqueeze(-1)
