"""CIGCN propagation (paper section 4.2): high-order compressed graphs, applied right to left.

For start behavior k the l-th order graph is ``B_k^1 = A^k`` and
``B_k^l = M_k^l B_k^{l-1}`` with ``M_k^l = sum_j diag(alpha_k^l[:, j]) A^j``: the node-wise
attention (eq. 9) of the node at the receiving end of each hop picks the behavior graph of that
hop. This is eq. 8 evaluated the way the authors' reference implementation does it (layer l
multiplies the previous layer's neighbour term; the paper's notation appends on the right, which
would need one pass per target node). No product matrix is ever formed: ``B_k^l x`` is computed
as ``M_k^l (M_k^{l-1} (... (A^k x)))``, one sparse-dense product per behavior and hop
(appendix A.6). With the LightGCN aggregator and residual connections (eq. 12-13)::

    x_k^0 = x,  x_k^l = B_k^l x + x_k^{l-1},  x_k^* = sum_{l=0..L} x_k^l

Shapes: n nodes (users then items, or a sampled subgraph), D dim, K behaviors, L layers.
"""

from __future__ import annotations

import torch


def spmm(adj: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``adj`` (sparse COO/CSR [n, m]) @ ``dense`` [m, F] -> [n, F]; differentiable in ``dense``."""
    return torch.sparse.mm(adj, dense)


def cigcn(
    ego: torch.Tensor,
    adjs: list[torch.Tensor],
    layers: int,
    alpha: torch.Tensor | None,
) -> torch.Tensor:
    """K representations of every node: ``[K, n, D]``.

    ``ego``: initial embeddings [n, D]; ``adjs``: K normalised sparse adjacencies [n, n] (target
    behavior last); ``alpha``: attention ``[K, L - 1, n, K]`` or None for behavior-specific
    propagation ``B_k^l = (A^k)^l`` (the "w/o CIGCN" ablation).
    """
    k_beh = len(adjs)
    n, d = ego.shape
    if layers == 0:
        return ego.unsqueeze(0).expand(k_beh, n, d)
    z = torch.stack([spmm(a, ego) for a in adjs])  # [K, n, D]: layer 1, A^k x
    prev = ego.unsqueeze(0) + z
    total = ego.unsqueeze(0) + prev
    for hop in range(layers - 1):
        if alpha is None:
            z = torch.stack([spmm(adjs[k], z[k]) for k in range(k_beh)])
        else:
            # every start behavior k at once: each A^j multiplies all K running vectors
            zf = z.permute(1, 0, 2).reshape(n, k_beh * d)
            p = torch.stack([spmm(a, zf) for a in adjs]).reshape(k_beh, n, k_beh, d)
            z = torch.einsum("knj,jnkd->knd", alpha[:, hop], p)
        prev = prev + z
        total = total + prev
    return total
