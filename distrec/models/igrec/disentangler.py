"""Interest disentangler (paper III-A): M interests per user from its embedding.

Shapes: U users in the call, D dim, M interests.
"""

from __future__ import annotations

import torch
from torch import nn


class SelfGating(nn.Module):
    """M self-gating units ``i_n = e_u * sigmoid(e_u W_n + b_n)`` (Eq. 1), batched.

    Example::

        gate = SelfGating(dim=8, interests=3)
        i = gate(torch.randn(5, 8))  # [5, 3, 8]
    """

    def __init__(self, dim: int, interests: int, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        # W_n stacked as [M, D, D] so all M units run as one einsum.
        self.weight = nn.Parameter(torch.empty(interests, dim, dim))
        self.bias = nn.Parameter(torch.zeros(interests, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DistributedModelParallel calls this for modules built on the meta device. A generator
        # of our own makes the initial weights independent of the world size (the global RNG
        # state at this point depends on what the sharding consumed).
        gen = torch.Generator().manual_seed(self.seed)
        for w in self.weight:  # per unit: a 3-D xavier would use the wrong fan-in
            _xavier(w, gen)
        nn.init.zeros_(self.bias)

    def forward(self, e_u: torch.Tensor) -> torch.Tensor:
        """e_u [U, D] -> interests [U, M, D]."""
        gate = torch.sigmoid(torch.einsum("ud,mde->ume", e_u, self.weight) + self.bias)
        return e_u.unsqueeze(1) * gate


class FullyConnected(nn.Module):
    """Table IV baseline: ``i_n = FC_n(e_u)`` with one or two linear layers (ReLU between)."""

    def __init__(self, dim: int, interests: int, layers: int, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.w = nn.ParameterList()
        self.b = nn.ParameterList()
        for _ in range(layers):
            self.w.append(nn.Parameter(torch.empty(interests, dim, dim)))
            self.b.append(nn.Parameter(torch.zeros(interests, dim)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for w, b in zip(self.w, self.b):
            for unit in w:
                _xavier(unit, gen)
            nn.init.zeros_(b)

    def forward(self, e_u: torch.Tensor) -> torch.Tensor:
        """e_u [U, D] -> interests [U, M, D]."""
        h = torch.einsum("ud,mde->ume", e_u, self.w[0]) + self.b[0]
        for w, b in zip(list(self.w)[1:], list(self.b)[1:]):
            h = torch.einsum("umd,mde->ume", torch.relu(h), w) + b
        return h


@torch.no_grad()
def _xavier(w: torch.Tensor, gen: torch.Generator) -> None:
    """Xavier-uniform init of a [D_in, D_out] matrix from ``gen`` (also on meta-built tensors)."""
    bound = (6.0 / (w.shape[0] + w.shape[1])) ** 0.5
    w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)


def build_disentangler(kind: str, dim: int, interests: int, seed: int = 0) -> nn.Module | None:
    """The module that maps e_u to interests; None for the ``embedding`` and ``none`` variants
    (interests then come from a per-user table or do not exist)."""
    if kind == "self_gating":
        return SelfGating(dim, interests, seed)
    if kind == "fc1":
        return FullyConnected(dim, interests, 1, seed)
    if kind == "fc2":
        return FullyConnected(dim, interests, 2, seed)
    return None
