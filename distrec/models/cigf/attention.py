"""Graph compression attention of CIGCN (paper section 4.2.2, eq. 9).

For start behavior k and layer l >= 2 every node v gets weights over the K behavior graphs,
``alpha[v] = sum_h LeakyReLU(W_k^{l,h} e_v + b_k^{l,h})`` (K values, not normalised: the paper uses
the activation directly), computed from the node's *initial* embedding e_v. Summing the heads is
exact: the H^(l-1) graphs of eq. 8 are all products of per-hop sums, and the convolution sums
them (eq. 11), so the sum over combinations factorises into a product of per-hop head sums.

Shapes: n nodes, D embedding dim, K behaviors, L layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BehaviorAttention(nn.Module):
    """Node-wise (or global) attention over K behavior graphs for every (start k, layer l >= 2).

    ``mode``: ``node_beh_layer`` (one map per start behavior and layer, the paper's choice),
    ``node_beh`` (shared over layers), ``node_layer`` (shared over behaviors), ``node`` (one map),
    ``global`` (a learned K-vector per (k, l), the same for every node).

    Example::

        att = BehaviorAttention(dim=16, num_behaviors=3, layers=3)
        alpha = att(ego)  # [K_start, L - 1, n, K]
    """

    def __init__(
        self,
        dim: int,
        num_behaviors: int,
        layers: int,
        heads: int = 1,
        mode: str = "node_beh_layer",
        slope: float = 0.2,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.k = num_behaviors
        self.hops = max(layers - 1, 0)  # layer 1 is A^k alone: no attention
        self.heads = heads
        self.mode = mode
        self.slope = slope
        n_beh = num_behaviors if mode in ("node_beh_layer", "node_beh", "global") else 1
        n_lay = self.hops if mode in ("node_beh_layer", "node_layer", "global") else 1
        self.n_beh, self.n_lay = n_beh, max(n_lay, 1)
        maps = self.n_beh * self.n_lay
        if mode == "global":
            # start near uniform mixing so every behavior graph contributes at first
            self.alpha = nn.Parameter(torch.full((maps, heads, num_behaviors), 1.0 / heads))
        else:
            self.weight = nn.Parameter(torch.empty(maps, heads * num_behaviors, dim))
            self.bias = nn.Parameter(torch.full((maps, heads * num_behaviors), bias_init))
            bound = (6.0 / (dim + heads * num_behaviors)) ** 0.5  # Xavier, as the paper's init
            nn.init.uniform_(self.weight, -bound, bound)

    def _map_index(self, k: int, hop: int) -> int:
        b = k if self.n_beh > 1 else 0
        layer = hop if self.n_lay > 1 else 0
        return b * self.n_lay + layer

    def forward(self, ego: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[K_start, L - 1, n, K]`` for node embeddings ``ego`` [n, D]."""
        n = ego.shape[0]
        if self.hops == 0:
            return ego.new_zeros(self.k, 0, n, self.k)
        if self.mode == "global":
            a = F.leaky_relu(self.alpha, self.slope).sum(dim=1)  # [maps, K]
            per_map = a[:, None, :].expand(-1, n, -1)
        else:
            # one matmul for every map: [n, D] x [D, maps*H*K]
            w = self.weight.reshape(-1, self.weight.shape[-1])
            logits = ego @ w.T + self.bias.reshape(-1)
            act = F.leaky_relu(logits, self.slope).reshape(n, -1, self.heads, self.k)
            per_map = act.sum(dim=2).permute(1, 0, 2)  # [maps, n, K]
        idx = [self._map_index(k, h) for k in range(self.k) for h in range(self.hops)]
        out = per_map[torch.tensor(idx, device=ego.device)]
        return out.reshape(self.k, self.hops, n, self.k)
