"""Normalised adjacency of (heterogeneous) interaction graphs, from bundle graphs or raw edges.

A graph here is a set of *relations*. A relation ``r`` holds a sparse matrix ``A_r`` of shape
``[N_src, N_dst]`` in CSR form, and one propagation layer computes, for every node type ``t``::

    h^{l+1}_t = sum over relations r with r.src == t of  A_r @ h^l_{r.dst}

which is LightGCN's layer for the bipartite relations ``ui`` (users aggregate items) and ``iu``
(items aggregate users), and extends to extra node types (groups) by adding relations. Rows of
``A_r`` are the bundle's ``graphs/<name>`` rows: one row per source node, ``dst`` its neighbours,
``w`` the normalised weights (``1/sqrt(deg_src * deg_dst)`` for ``ui.<b>`` / ``iu.<b>``).

Shapes: E edges (nnz), N_src / N_dst node counts of the two sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr

# The bundle reader's CSR type is the adjacency type here too (one CSR class in the code base).
Adjacency = Csr


def to_torch(adj: Csr, device: torch.device | str = "cpu") -> torch.Tensor:
    """Coalesced sparse COO tensor [num_src, num_dst] (COO: ``torch.sparse.mm`` has a backward)."""
    idx = torch.from_numpy(np.stack([adj.sources(), adj.indices]).astype(np.int64))
    w = torch.from_numpy(np.asarray(adj.weights, dtype=np.float32))
    return torch.sparse_coo_tensor(
        idx, w, (adj.num_src, adj.num_dst), device=device, check_invariants=False
    ).coalesce()


def sym_normalized(adj: Adjacency) -> Adjacency:
    """Same edges with weights ``1/sqrt(deg_src * deg_dst)`` (LightGCN's ``D^-1/2 A D^-1/2``).

    Degrees count edges of this bipartite matrix: ``deg_src`` per row, ``deg_dst`` per column.
    """
    deg_src = adj.degrees().astype(np.float64)
    deg_dst = np.bincount(adj.indices, minlength=adj.num_dst).astype(np.float64)
    rows = adj.sources()
    w = 1.0 / np.sqrt(deg_src[rows] * deg_dst[adj.indices])
    return Csr(adj.indptr, adj.indices, w.astype(np.float32), adj.num_src, adj.num_dst)


def row_normalized(adj: Adjacency) -> Adjacency:
    """Same edges with weights ``1/deg_src`` (mean aggregation, e.g. group <- members)."""
    deg = adj.degrees().astype(np.float64)
    w = 1.0 / deg[adj.sources()]
    return Csr(adj.indptr, adj.indices, w.astype(np.float32), adj.num_src, adj.num_dst)


@dataclass
class Relation:
    """One typed relation: rows of node type ``src`` aggregate neighbours of type ``dst``."""

    name: str
    src: str
    dst: str
    adj: Adjacency


@dataclass
class HeteroGraph:
    """Node counts per type and the relations that propagate between them."""

    num_nodes: dict[str, int]
    relations: list[Relation]

    def __post_init__(self) -> None:
        for r in self.relations:
            for side, t, n in (("src", r.src, r.adj.num_src), ("dst", r.dst, r.adj.num_dst)):
                if t not in self.num_nodes:
                    raise ValueError(f"relation {r.name}: unknown node type {t!r}")
                if n != self.num_nodes[t]:
                    raise ValueError(
                        f"relation {r.name}: {side} side has {n} rows but {t} has "
                        f"{self.num_nodes[t]} nodes"
                    )

    def relations_into(self, node_type: str) -> list[Relation]:
        """Relations whose rows are of ``node_type`` (they produce its next-layer embedding)."""
        return [r for r in self.relations if r.src == node_type]

    def torch_adjacency(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``{relation name: sparse [N_src, N_dst]}`` for :func:`propagate_full` (cache it)."""
        return {r.name: to_torch(r.adj, device) for r in self.relations}


def bipartite_graph(ui: Adjacency, iu: Adjacency | None = None) -> HeteroGraph:
    """User-item graph with relations ``ui`` ([U, I]) and ``iu`` ([I, U]; ``ui^T`` when None)."""
    iu = ui.transpose() if iu is None else iu
    return HeteroGraph(
        num_nodes={"user": ui.num_src, "item": ui.num_dst},
        relations=[Relation("ui", "user", "item", ui), Relation("iu", "item", "user", iu)],
    )


def bipartite_from_bundle(
    bundle: Bundle, behavior: str | None = None, renormalize: bool = False
) -> HeteroGraph:
    """LightGCN's graph from a ``distrec.data.Bundle``: ``graphs/ui.<b>`` and ``graphs/iu.<b>``.

    ``behavior`` defaults to the target behavior. Bundle weights are already symmetric-normalised
    (the bundle contract); ``renormalize`` recomputes them from the edges, for bundles that used
    another normalisation. A bundle without the graph tables falls back to its train interactions.
    """
    m = bundle.manifest
    b = behavior or m.target_behavior
    names = (f"ui.{b}", f"iu.{b}")
    if all(f"graphs/{n}" in m.tables for n in names):
        ui = bundle.graph(names[0])
        iu = bundle.graph(names[1])
    else:
        inter = bundle.interactions("train", behavior=b)
        ui = sym_normalized(Csr.from_pairs(inter["user"], inter["item"], m.num_users, m.num_items))
        iu = None
    if renormalize:
        ui = sym_normalized(ui)
        iu = None if iu is None else sym_normalized(iu)
    return bipartite_graph(ui, iu)
