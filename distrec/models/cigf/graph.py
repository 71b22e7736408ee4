"""Behavior adjacencies of CIGF in one node space, and per-batch neighbourhood sampling.

Node ids: users ``0..M-1`` then items ``M..M+N-1`` (n = M + N), so ``A^k`` of eq. 5 is one
square CSR ``[[0, Y^k], [Y^k^T, 0]]`` built from the bundle's ``ui.<b>`` / ``iu.<b>`` graphs and
their symmetric normalisation ``1/sqrt(deg_u deg_i)``.

Sampled mode: the seeds' L-hop neighbourhood over the union of all behaviors, drawn by the one
sampler (:mod:`distrec.graph.sampler`, ``expand="new"``): each node's row sampled once per step
(``fanout[d]`` neighbours over all behaviors, or per behavior, for nodes first reached at depth
d, weights rescaled by ``deg / fanout`` so each hop stays unbiased). Rows exist for nodes within
L - 1 hops, which is exactly what CIGCN needs: layer l is exact at nodes within L - l hops, and
the seeds are at depth 0. With unlimited fanout the result equals full-graph propagation.

Shapes: n nodes, S seeds, U subgraph nodes, E subgraph edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.schema import iu_graph, ui_graph
from distrec.graph.adjacency import HeteroGraph, Relation
from distrec.graph.sampler import sample_blocks


def node_adjacency(ui: Csr, iu: Csr) -> Csr:
    """Square adjacency [n, n] of one behavior from its user->item and item->user graphs."""
    m, n_items = ui.num_src, ui.num_dst
    if (iu.num_src, iu.num_dst) != (n_items, m):
        raise ValueError(f"iu graph is {iu.num_src}x{iu.num_dst}, expected {n_items}x{m}")
    src = np.concatenate([ui.sources(), m + iu.sources()])
    dst = np.concatenate([m + ui.indices, iu.indices])
    w = np.concatenate([ui.weights, iu.weights]).astype(np.float32)
    return Csr.from_pairs(src, dst, m + n_items, m + n_items, w, dedup=False)


def load_behavior_adjacency(bundle: Bundle, behaviors: list[str]) -> list[Csr]:
    """``A^k`` for every behavior in ``behaviors`` (target last), read from the bundle."""
    out = []
    for b in behaviors:
        bundle.behavior_index(b)  # a clear error for a behavior the bundle lacks
        out.append(node_adjacency(bundle.graph(ui_graph(b)), bundle.graph(iu_graph(b))))
    return out


def row_normalise(adj: Csr) -> Csr:
    """``D^-1 A``: every non-empty row of ``adj`` [n, n] averages its neighbours (weights 1/deg).

    The authors' code uses this ("left") normalisation by default; the bundle stores the
    symmetric one, so the edge set is kept and only the weights are replaced.
    """
    deg = adj.degrees().astype(np.float32)
    w = np.repeat(1.0 / np.maximum(deg, 1.0), adj.degrees()).astype(np.float32)
    return Csr(adj.indptr, adj.indices, w, adj.num_src, adj.num_dst)


def to_sparse(adj: Csr, device: torch.device | str = "cpu") -> torch.Tensor:
    """Coalesced COO tensor [n, n] (COO: ``torch.sparse.mm`` has a backward for the dense side)."""
    idx = torch.from_numpy(np.stack([adj.sources(), adj.indices]))
    w = torch.from_numpy(np.asarray(adj.weights, dtype=np.float32))
    return torch.sparse_coo_tensor(
        idx, w, (adj.num_src, adj.num_dst), device=device, check_invariants=False
    ).coalesce()


def node_kjt(
    users: np.ndarray, items: np.ndarray, stride: int = 0
) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """Lookup of ``users`` [U_u] (key ``user``) and ``items`` [U_i] (key ``pos``), one id per bag.

    A KJT has one stride for all keys, so the shorter key is padded with empty bags (they pool
    to zero rows that the model drops). Returns the KJT and ``n_nodes`` = [U_u, U_i].
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    nu, ni = users.shape[0], items.shape[0]
    # ``stride`` pads every rank to the same bag count: row-wise sharded pooling exchanges
    # [stride, F*D] blocks between ranks, and gloo's all-gather (its backward) needs equal sizes
    stride = max(nu, ni, stride)
    lengths = np.zeros(3 * stride, dtype=np.int64)  # keys user, pos, neg (neg always empty)
    lengths[:nu] = 1
    lengths[stride : stride + ni] = 1
    kjt = KeyedJaggedTensor(
        keys=["user", "pos", "neg"],
        values=torch.from_numpy(np.concatenate([users, items])),
        lengths=torch.from_numpy(lengths),
        stride=stride,
    )
    return kjt, torch.tensor([nu, ni], dtype=torch.int64)


@dataclass
class Subgraph:
    """A sampled neighbourhood: ``nodes`` [U] sorted global ids (users first); edges in local ids
    ``rows``/``cols`` [E] with ``weights`` [E] and behavior index ``behavior`` [E]."""

    nodes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    behavior: np.ndarray

    def local(self, global_ids: np.ndarray) -> np.ndarray:
        """Positions of ``global_ids`` in ``nodes`` (every id must be in the subgraph)."""
        return np.searchsorted(self.nodes, global_ids)


def behavior_graph(adjs: list[Csr]) -> HeteroGraph:
    """The K behavior adjacencies as one :class:`HeteroGraph` over node type ``node`` (relation
    ``b<j>`` = behavior j), what :func:`distrec.graph.sampler.sample_blocks` samples from."""
    n = adjs[0].num_src if adjs else 0
    return HeteroGraph(
        {"node": n}, [Relation(f"b{j}", "node", "node", a) for j, a in enumerate(adjs)]
    )


def sample_subgraph(
    graph: HeteroGraph | list[Csr],
    seeds: np.ndarray,
    layers: int,
    fanout: list[int] | None,
    rng: np.random.Generator,
    fanout_over: str = "relation",
    max_frontier: int = 0,
) -> Subgraph:
    """The ``layers``-hop neighbourhood of ``seeds`` (global node ids) over all behaviors, drawn
    by the one sampler (``expand="new"``: each node's row sampled once, at the hop that reaches
    it; a node's draws depend only on (rng, node), so a rank sampling its own slice of a batch
    gets the edges a single rank would). ``fanout[d]``: neighbours per node at hop d, over the
    union of behaviors (``fanout_over="union"``) or per behavior; <= 0 = all; CIGF's rule: the
    last entry repeats for deeper hops. ``graph``: :func:`behavior_graph` (or its adjacencies)."""
    if not isinstance(graph, HeteroGraph):
        graph = behavior_graph(graph)
    caps = list(fanout or [])
    caps = caps + caps[-1:] * (layers - len(caps)) if caps else []
    blocks = sample_blocks(
        {"node": np.asarray(seeds, dtype=np.int64)},
        graph,
        layers,
        caps,
        rng,
        fanout_over=fanout_over,
        max_frontier=max_frontier,
        expand="new",
    )
    found = blocks.input_nodes()["node"].numpy()
    order = np.argsort(found, kind="stable")  # Subgraph keeps its nodes sorted (users first)
    slot = np.empty_like(order)
    slot[order] = np.arange(len(order))
    rows, cols, ws, behs = [], [], [], []
    for name, (r, c, w) in blocks.subgraph().items():
        rows.append(slot[r.numpy()])
        cols.append(slot[c.numpy()])
        ws.append(w.numpy())
        behs.append(np.full(len(r), int(name[1:]), dtype=np.int64))
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return Subgraph(
        nodes=found[order],
        rows=cat(rows, np.int64),
        cols=cat(cols, np.int64),
        weights=cat(ws, np.float32),
        behavior=cat(behs, np.int64),
    )


def subgraph_tensors(sub: Subgraph, prefix: str = "adj") -> dict[str, torch.Tensor]:
    """The subgraph's edges as ``Batch.dense`` entries (``<prefix>_rows`` etc.)."""
    return {
        f"{prefix}_rows": torch.from_numpy(sub.rows),
        f"{prefix}_cols": torch.from_numpy(sub.cols),
        f"{prefix}_w": torch.from_numpy(sub.weights),
        f"{prefix}_beh": torch.from_numpy(sub.behavior),
    }


def adjacency_from_dense(
    dense: dict[str, torch.Tensor], num_nodes: int, num_behaviors: int, prefix: str = "adj"
) -> list[torch.Tensor]:
    """K sparse [U, U] adjacencies from :func:`subgraph_tensors` output."""
    rows, cols = dense[f"{prefix}_rows"], dense[f"{prefix}_cols"]
    w, beh = dense[f"{prefix}_w"], dense[f"{prefix}_beh"]
    out = []
    for j in range(num_behaviors):
        sel = beh == j
        idx = torch.stack([rows[sel], cols[sel]])
        out.append(
            torch.sparse_coo_tensor(
                idx, w[sel], (num_nodes, num_nodes), device=w.device, check_invariants=False
            ).coalesce()
        )
    return out
