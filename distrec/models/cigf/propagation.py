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

from collections.abc import Callable

import torch

#: ``x`` [n, F] -> ``[A^j @ x for j in 0..K-1]``: one product per behavior graph. Partitioned full
#: mode passes :meth:`distrec.graph.halo.PartitionedGraph.matmul` (this rank's rows, one halo
#: fetch for all K); otherwise :func:`products` over whole sparse matrices.
Products = Callable[[torch.Tensor], list[torch.Tensor]]


def spmm(adj: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``adj`` (sparse COO/CSR [n, m]) @ ``dense`` [m, F] -> [n, F]; differentiable in ``dense``."""
    return torch.sparse.mm(adj, dense)


def products(adjs: list[torch.Tensor]) -> Products:
    """:data:`Products` of whole sparse matrices ``adjs`` (K of [n, n])."""
    return lambda x: [spmm(a, x) for a in adjs]


def cigcn(
    ego: torch.Tensor,
    adjs: list[torch.Tensor] | Products,
    layers: int,
    alpha: torch.Tensor | None,
    num_behaviors: int | None = None,
) -> torch.Tensor:
    """K representations of every node: ``[K, n, D]``.

    ``ego``: initial embeddings [n, D]; ``adjs``: K normalised sparse adjacencies [n, n] (target
    behavior last), or their :data:`Products` (then pass ``num_behaviors``); ``alpha``: attention
    ``[K, L - 1, n, K]`` or None for behavior-specific propagation ``B_k^l = (A^k)^l`` (the
    "w/o CIGCN" ablation). Under partitioned products ``n`` is this rank's own nodes.
    """
    if callable(adjs):
        prod, k_beh = adjs, int(num_behaviors or 0)
    else:
        prod, k_beh = products(adjs), len(adjs)
    n, d = ego.shape
    if layers == 0:
        return ego.unsqueeze(0).expand(k_beh, n, d)
    z = torch.stack(prod(ego))  # [K, n, D]: layer 1, A^k x
    prev = ego.unsqueeze(0) + z
    total = ego.unsqueeze(0) + prev
    for hop in range(layers - 1):
        if alpha is None and not callable(adjs):
            z = torch.stack([spmm(adjs[k], z[k]) for k in range(k_beh)])
            prev = prev + z
            total = total + prev
            continue
        # every start behavior k at once: each A^j multiplies all K running vectors (one halo
        # fetch of [n, K*D] under partitioned products)
        zf = z.permute(1, 0, 2).reshape(n, k_beh * d)
        p = torch.stack(prod(zf)).reshape(k_beh, n, k_beh, d)  # [j, n, k, D]: A^j z_k
        if alpha is None:
            z = torch.stack([p[k, :, k] for k in range(k_beh)])
        else:
            z = torch.einsum("knj,jnkd->knd", alpha[:, hop], p)
        prev = prev + z
        total = total + prev
    return total
