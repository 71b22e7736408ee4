"""Graph propagation in two modes that compute the same thing (ARCHITECTURE.md).

* ``full``: :func:`propagate_full` multiplies whole embedding tables by the normalised adjacency
  of every relation, layer by layer. Exact; the tables come from one lookup of every id (through
  the sharded EmbeddingBagCollection, which fetches rows from their owners).
* ``sampled``: :func:`propagate_blocks` applies per-batch neighbourhood blocks
  (:func:`distrec.graph.sampler.sample_blocks`) to the rows of the outermost frontier only.
  With unlimited fanout it equals ``full`` on the seeds, values and gradients.

One layer, for each node type ``t``: ``h^{l+1}_t = sum_{r: r.src = t} A_r @ h^l_{r.dst}``; a node
type that no relation produces gets zeros. Both functions return all layers ``0..L`` so a model
picks its own combination (LightGCN: :func:`combine_layers` mean).

Shapes: N_t nodes of type t, S_k[t] frontier sizes, D embedding dim.
"""

from __future__ import annotations

import torch

from distrec.graph.adjacency import HeteroGraph
from distrec.graph.halo import PartitionedGraph
from distrec.graph.sampler import Blocks

Embeddings = dict[str, torch.Tensor]


def _spmm(indices: torch.Tensor, weights: torch.Tensor, shape: tuple[int, int], h: torch.Tensor):
    """``A @ h`` for A given as COO (indices [2, E], weights [E]) of ``shape``: [shape[0], D]."""
    a = torch.sparse_coo_tensor(
        indices, weights.to(h.dtype), shape, device=h.device, check_invariants=False
    )
    return torch.sparse.mm(a, h)


def propagate_full(
    graph: HeteroGraph | dict[str, tuple[str, str]],
    emb: Embeddings,
    layers: int,
    adjacency: dict[str, torch.Tensor] | None = None,
) -> list[Embeddings]:
    """Full-graph propagation.

    Args:
        graph: a HeteroGraph, or ``{relation: (src type, dst type)}`` when ``adjacency`` is given.
        emb: layer-0 tables ``{node_type: [N_t, D]}`` (autograd flows back into them).
        layers: L.
        adjacency: ``{relation: sparse [N_src, N_dst]}`` (``graph.torch_adjacency()``, cached by
            the caller so the COO tensors are built once, not every step).

    Returns:
        L+1 dicts ``{node_type: [N_t, D]}``, layer 0 first (layer 0 is ``emb`` itself).
    """
    if isinstance(graph, HeteroGraph):
        rels = {r.name: (r.src, r.dst) for r in graph.relations}
        adjacency = adjacency if adjacency is not None else graph.torch_adjacency()
    else:
        rels = graph
        if adjacency is None:
            raise ValueError("propagate_full: pass adjacency when graph is a relation dict")
    out = [dict(emb)]
    h = emb
    for _ in range(layers):
        nxt: Embeddings = {}
        for t, x in h.items():
            terms = [
                torch.sparse.mm(adjacency[n].to(x.dtype), h[d])
                for n, (s, d) in rels.items()
                if s == t
            ]
            nxt[t] = torch.stack(terms).sum(0) if terms else torch.zeros_like(x)
        out.append(nxt)
        h = nxt
    return out


def propagate_partitioned(
    graph: PartitionedGraph, h0: torch.Tensor, layers: int
) -> list[torch.Tensor]:
    """Partitioned full propagation over the first flat-space matrix of ``graph``.

    Args:
        graph: this rank's adjacency rows and halo plan (collective to build, built once).
        h0: layer-0 rows of this rank's own nodes, local order [n_local, D].
        layers: L.

    Returns:
        L+1 tensors [n_local, D] (layer 0 is ``h0``): ``h^{l+1}[own] = A[own, :] h^l``, the halo
        of every layer fetched from its owners (collective: every rank calls it together).
    """
    out = [h0]
    for _ in range(layers):
        out.append(graph.matmul(out[-1])[0])
    return out


def readout_partitioned(
    graph: PartitionedGraph, h0: torch.Tensor, layers: int, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN's readout of some own rows: the layer mean and layer 0 of local rows ``rows``.

    Args:
        graph: as in :func:`propagate_partitioned` (its first matrix).
        h0: layer-0 rows of this rank's own nodes, local order [n_local, D].
        layers: L.
        rows: local row indices [S] (repeats allowed).

    Returns:
        ``(mean_{l=0..L} h^l[rows], h^0[rows])``, [S, D] each; differentiable in ``h0``.

    The same values as indexing :func:`propagate_partitioned`'s layers, as one autograd node:
    forward keeps no layer (two [n_local, D] at a time), backward runs the transposed layers
    over one running gradient and adds each layer's [S, D] share into it in place, where
    autograd would zero-fill an [n_local, D] gradient per indexed layer and add them up.
    Collective (every rank calls it together, also with S = 0).
    """
    return _Readout.apply(h0, graph, layers, rows)


class _Readout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h0: torch.Tensor, graph: PartitionedGraph, layers: int, rows: torch.Tensor):  # type: ignore[override]
        ctx.graph, ctx.layers, ctx.meta = graph, layers, (h0.shape, h0.dtype, h0.device)
        ctx.save_for_backward(rows)
        ctx.set_materialize_grads(False)
        ego = h0.index_select(0, rows)
        acc, h = ego.clone(), h0
        for _ in range(layers):
            h = graph.products(h)[0]
            acc += h.index_select(0, rows)
        return acc / (layers + 1), ego

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor | None, g_ego: torch.Tensor | None):  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        size, dtype, device = ctx.meta
        g = torch.zeros(size, dtype=dtype, device=device)  # gradient of the current layer
        share = None if g_mean is None else g_mean / (ctx.layers + 1)  # [S, D] per layer
        if share is not None:
            g.index_add_(0, rows, share)
        for _ in range(ctx.layers):  # h^{l+1} = A h^l: g^l = A^T g^{l+1} + share
            g = ctx.graph.products_t([g], ctx.meta)
            if share is not None:
                g.index_add_(0, rows, share)
        if g_ego is not None:
            g.index_add_(0, rows, g_ego)
        return g, None, None, None


def propagate_blocks(blocks: Blocks, emb: Embeddings) -> list[Embeddings]:
    """Sampled propagation over ``blocks``.

    Args:
        blocks: from :func:`sample_blocks` (tensors on the same device as ``emb``).
        emb: layer-0 rows of the outermost frontier ``{t: [S_L[t], D]}``, in the order of
            ``blocks.frontiers[-1][t]`` (one lookup of those ids).

    Returns:
        L+1 dicts ``{node_type: [S_0[t], D]}``: every layer's embedding of the distinct seeds
        (``frontiers[0]`` order; index with ``blocks.seed_index[t]`` for the given seed order).
    """
    L = blocks.num_layers
    n0 = {t: len(ids) for t, ids in blocks.frontiers[0].items()}
    h = emb
    for t, ids in blocks.frontiers[L].items():
        if h[t].shape[0] != len(ids):
            raise ValueError(f"emb[{t!r}] has {h[t].shape[0]} rows, frontier has {len(ids)}")
    # Frontier k is a prefix of frontier k+1, so layer l of the seeds is the first rows of the
    # layer-l result over any frontier.
    out = [{t: x[: n0[t]] for t, x in h.items() if t in n0}]
    for k in reversed(range(L)):
        nxt: Embeddings = {}
        for t, ids in blocks.frontiers[k].items():
            acc = None
            for n, e in blocks.blocks[k].items():
                s, d = blocks.relations[n]
                if s != t:
                    continue
                idx = torch.stack([e.rows, e.cols])
                y = _spmm(idx, e.weights, (len(ids), h[d].shape[0]), h[d])
                acc = y if acc is None else acc + y
            if acc is None:
                ref = next(iter(h.values()))
                acc = ref.new_zeros(len(ids), ref.shape[1])
            nxt[t] = acc
        h = nxt
        out.append({t: x[: n0[t]] for t, x in h.items() if t in n0})
    return out


def combine_layers(per_layer: list[Embeddings], weights: list[float] | None = None) -> Embeddings:
    """Weighted sum over layers (default: LightGCN's mean ``1/(L+1)``): ``{t: [N_t, D]}``."""
    n = len(per_layer)
    weights = weights if weights is not None else [1.0 / n] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} layer weights for {n} layers")
    out: Embeddings = {}
    for t in per_layer[0]:
        acc = weights[0] * per_layer[0][t]
        for w, layer in zip(weights[1:], per_layer[1:]):
            acc = acc + w * layer[t]
        out[t] = acc
    return out
