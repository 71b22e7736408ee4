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
                                           = (L + 1) x + sum_{l=1..L} (L - l + 1) B_k^l x

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
    """K representations of every node: ``[K, n, D]`` (a view of a node-major ``[n, K, D]``
    tensor, so ``reps.permute(1, 0, 2).reshape(n, K * D)`` is free).

    ``ego``: initial embeddings [n, D]; ``adjs``: K normalised sparse adjacencies [n, n] (target
    behavior last), or their :data:`Products` (then pass ``num_behaviors``); ``alpha``: attention
    ``[K, L - 1, n, K]`` or None for behavior-specific propagation ``B_k^l = (A^k)^l`` (the
    "w/o CIGCN" ablation). Under partitioned products ``n`` is this rank's own nodes.

    Node-major layout throughout (why: measured 1.55x less CPU for forward + backward than the
    former ``[K, n, D]`` stack + einsum, whose permuted copies and n x K tiny bmm's cost more than
    the sparse products; docs/results/cigf.md, "Issue #14"): the running vectors of all K start
    behaviors of a node are one row ``[K * D]``, so every ``A^j`` multiplies all of them in one
    product with no copy, and the attention mixes the K products with broadcast multiply-adds.
    The residual sums are folded: ``x^* = (L + 1) x + sum_l (L - l + 1) z_l``, ``z_l = B^l x``.
    """
    if callable(adjs):
        prod, k_beh = adjs, int(num_behaviors or 0)
    else:
        prod, k_beh = products(adjs), len(adjs)
    n, d = ego.shape
    if layers == 0:
        return ego.unsqueeze(0).expand(k_beh, n, d)
    z = torch.stack(prod(ego), dim=1)  # [n, K, D]: layer 1, z[:, k] = A^k x
    total = ego.unsqueeze(1) * float(layers + 1) + z * float(layers)
    for hop in range(layers - 1):
        if alpha is None:  # behavior-specific: z_k <- A^k z_k
            if callable(adjs):
                p = prod(z.reshape(n, k_beh * d))
                z = torch.stack([p[k].view(n, k_beh, d)[:, k] for k in range(k_beh)], dim=1)
            else:
                z = torch.stack([spmm(adjs[k], z[:, k]) for k in range(k_beh)], dim=1)
        else:
            # z_k <- sum_j diag(alpha_k[:, j]) A^j z_k for every start behavior k at once: each
            # A^j multiplies the [n, K*D] block of all running vectors (one halo fetch under
            # partitioned products)
            a = alpha[:, hop].permute(1, 2, 0).contiguous()  # [n, j, k]
            p = prod(z.reshape(n, k_beh * d))
            acc = p[0].view(n, k_beh, d) * a[:, 0, :, None]
            for j in range(1, k_beh):
                acc = acc + p[j].view(n, k_beh, d) * a[:, j, :, None]
            z = acc
        total = total + z * float(layers - hop - 1)
    return total.permute(1, 0, 2)
