"""The one neighbourhood sampler of LightGCN, IGRec and CIGF (``sampled`` graph mode).

``sample_blocks(seeds, graph, layers, fanout, rng)`` grows frontiers outward from the seeds:

* ``frontiers[0][t]`` = the distinct seed ids of node type ``t``;
* ``frontiers[k + 1][t]`` = ``frontiers[k][t]`` (as a prefix, so every node keeps its slot) followed
  by the new neighbours sampled for the nodes of ``frontiers[k]``;
* ``blocks[k]`` holds, per relation, the sampled edges from ``frontiers[k]`` (rows, outputs) to
  ``frontiers[k + 1]`` (columns, inputs) with rescaled weights.

Only ``frontiers[layers]`` needs embedding rows (one deduplicated lookup through the sharded
tables); :func:`distrec.graph.propagate.propagate_blocks` applies ``blocks[layers-1] ... blocks[0]``.
``expand="new"`` samples each node's row once, at the hop that first reaches it (CIGF propagates
over the union of the blocks as one subgraph, :meth:`Blocks.subgraph`); the default ``"all"``
samples every frontier node again at every hop (block-wise propagation needs each hop's rows).

Cost is O(fanout) per node: a row of degree ``deg <= f`` is taken whole, a longer one gets ``f``
distinct positions in ``[0, deg)`` by Floyd's algorithm (``f`` vectorised rounds over all long
rows), read from the CSR offsets without touching the rest of the row. Each kept edge's weight is
multiplied by ``deg / f`` (it is kept with probability ``f / deg``), so every hop is an unbiased
estimate of the full product; with unlimited fanout (``-1``, ``0`` or a missing entry) the blocks
are exact. ``fanout_over="union"`` draws ``f`` neighbours per node from the concatenation of its
rows in all relations out of its type (CIGF's behaviors), ``"relation"`` ``f`` per relation.
``max_frontier`` caps the sampled neighbours per hop and source node type (per relation in
``"relation"`` mode) by lowering that hop's fanout to ``max(1, max_frontier // nodes expanded)``.

Random draws are counter-based: draw ``j`` of node ``v`` at hop ``k`` and relation ``r`` is a hash
of (salt(seed, step, k, r), v, j), so a node's sample depends only on (seed, step, node), never
on the other nodes of the batch: ranks that sample only their own slice draw the same neighbours
for a node as one rank sampling the whole batch (unless ``max_frontier`` binds, which depends on
the frontier size). Rows come from a :class:`RowSource`; :class:`LocalRows` reads the graph's CSR
(replicated structure, or the rows this rank owns); a source that fetches non-owned rows from
their owners plugs in the same way.

Shapes: S_k[t] nodes of type t in frontier k; E_kr edges of relation r in block k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from distrec.graph.adjacency import HeteroGraph


@dataclass
class BlockEdges:
    """Edges of one relation in one block: ``rows`` int64[E] index ``frontiers[k][src]``,
    ``cols`` int64[E] index ``frontiers[k+1][dst]``, ``weights`` float32[E]."""

    rows: torch.Tensor
    cols: torch.Tensor
    weights: torch.Tensor


@dataclass
class Blocks:
    """Sampled frontiers and blocks; see the module docstring.

    ``frontiers``: list of length L+1 of ``{node_type: int64[S_k[t]]}`` (global node ids).
    ``blocks``: list of length L of ``{relation name: BlockEdges}``.
    ``relations``: ``{relation name: (src type, dst type)}``.
    ``seed_index``: ``{node_type: int64[len(seeds[t])]}``, the slot of each given seed (with
    repeats) in ``frontiers[0][t]``.
    """

    frontiers: list[dict[str, torch.Tensor]]
    blocks: list[dict[str, BlockEdges]]
    relations: dict[str, tuple[str, str]]
    seed_index: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def input_nodes(self) -> dict[str, torch.Tensor]:
        """Ids whose layer-0 rows :func:`propagate_blocks` needs: ``frontiers[L]``."""
        return self.frontiers[-1]

    def num_edges(self) -> int:
        return sum(int(e.rows.numel()) for blk in self.blocks for e in blk.values())

    def subgraph(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """All blocks as one subgraph over ``frontiers[L]``: ``{relation: (rows, cols, w)}``
        (int64[E], int64[E], float32[E]) indexing ``frontiers[L][src]`` / ``[dst]``. Frontier k is
        a prefix of frontier L, so block slots are subgraph slots. Meant for ``expand="new"``,
        where every row is sampled once."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for r in self.relations:
            parts = [blk[r] for blk in self.blocks if r in blk]
            if parts:
                out[r] = (
                    torch.cat([e.rows for e in parts]),
                    torch.cat([e.cols for e in parts]),
                    torch.cat([e.weights for e in parts]),
                )
        return out

    def to_dense(self, prefix: str = "g") -> dict[str, torch.Tensor]:
        """Flatten into named tensors (for ``Batch.dense``); inverse of :meth:`from_dense`."""
        out: dict[str, torch.Tensor] = {f"{prefix}.layers": torch.tensor([self.num_layers])}
        for k, fr in enumerate(self.frontiers):
            for t, ids in fr.items():
                out[f"{prefix}.f{k}.{t}"] = ids
        for k, blk in enumerate(self.blocks):
            for r, e in blk.items():
                out[f"{prefix}.b{k}.{r}.rows"] = e.rows
                out[f"{prefix}.b{k}.{r}.cols"] = e.cols
                out[f"{prefix}.b{k}.{r}.w"] = e.weights
        for t, s in self.seed_index.items():
            out[f"{prefix}.seed.{t}"] = s
        return out

    @classmethod
    def from_dense(
        cls,
        dense: dict[str, torch.Tensor],
        relations: dict[str, tuple[str, str]],
        prefix: str = "g",
    ) -> Blocks:
        layers = int(dense[f"{prefix}.layers"].item())
        types = {t for pair in relations.values() for t in pair}
        frontiers = [
            {t: dense[f"{prefix}.f{k}.{t}"] for t in sorted(types) if f"{prefix}.f{k}.{t}" in dense}
            for k in range(layers + 1)
        ]
        blocks = []
        for k in range(layers):
            blk = {}
            for r in relations:
                key = f"{prefix}.b{k}.{r}"
                if f"{key}.rows" in dense:
                    blk[r] = BlockEdges(
                        dense[f"{key}.rows"], dense[f"{key}.cols"], dense[f"{key}.w"]
                    )
            blocks.append(blk)
        seed_index = {
            t: dense[f"{prefix}.seed.{t}"] for t in sorted(types) if f"{prefix}.seed.{t}" in dense
        }
        return cls(frontiers, blocks, dict(relations), seed_index)


class RowSource(Protocol):
    """Adjacency rows by relation name: what the sampler reads, wherever the rows live."""

    def degrees(self, relation: str, nodes: np.ndarray) -> np.ndarray:
        """Row lengths of ``nodes`` [n]: int64[n]."""
        ...

    def entries(
        self, relation: str, nodes: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour id int64[E] and weight float32[E] at position ``offsets[e]`` of row
        ``nodes[e]``."""
        ...


class LocalRows:
    """:class:`RowSource` over the CSR held in a :class:`HeteroGraph` (rows held locally)."""

    def __init__(self, graph: HeteroGraph) -> None:
        self.adj = {r.name: r.adj for r in graph.relations}

    def degrees(self, relation: str, nodes: np.ndarray) -> np.ndarray:
        ip = self.adj[relation].indptr
        return (ip[nodes + 1] - ip[nodes]).astype(np.int64)

    def entries(
        self, relation: str, nodes: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        a = self.adj[relation]
        pos = a.indptr[nodes] + offsets
        return a.indices[pos].astype(np.int64, copy=False), a.weights[pos]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> uint64, elementwise)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def node_keys(salt: int, nodes: np.ndarray) -> np.ndarray:
    """Per-node random stream keys uint64[n] from (salt, node id)."""
    with np.errstate(over="ignore"):
        return _mix(nodes.astype(np.uint64) * _GOLDEN + np.uint64(salt & (2**64 - 1)))


def draw_uniform(keys: np.ndarray, j: int) -> np.ndarray:
    """Draw number ``j`` of every stream in ``keys``: uniform float64[n] in [0, 1)."""
    with np.errstate(over="ignore"):
        z = _mix(keys + np.uint64(j + 1) * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def draw_offsets(
    degs: np.ndarray, cap: int, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``cap`` distinct offsets per row, uniformly without replacement (0 = all).

    Args:
        degs: row lengths int64[n]; keys: per-row random streams uint64[n] (:func:`node_keys`).

    Returns:
        (row slot int64[E], offset in the row int64[E], weight scale float32[E]); rows of degree
        <= cap are taken whole (scale 1), longer ones get exactly ``cap`` offsets (scale
        deg / cap) drawn by Floyd's algorithm, O(cap^2) work per long row whatever its degree.
    """
    degs = degs.astype(np.int64, copy=False)
    short = degs if cap <= 0 else np.minimum(degs, cap)
    whole = np.flatnonzero((degs > 0) & ((degs <= cap) | (cap <= 0)))
    n_whole = short[whole]
    slot_w = np.repeat(whole, n_whole)
    first = np.cumsum(n_whole) - n_whole
    off_w = np.arange(int(n_whole.sum()), dtype=np.int64) - np.repeat(first, n_whole)
    if cap <= 0:
        return slot_w, off_w, np.ones(len(slot_w), np.float32)
    long_ = np.flatnonzero(degs > cap)
    if len(long_) == 0:
        return slot_w, off_w, np.ones(len(slot_w), np.float32)
    d, kl = degs[long_], keys[long_]
    sel = np.empty((len(long_), cap), dtype=np.int64)
    for step in range(cap):  # Floyd: for j = d-cap .. d-1 pick t in [0, j]; t taken -> take j
        j = d - cap + step
        t = np.minimum((draw_uniform(kl, step) * (j + 1)).astype(np.int64), j)
        taken = (sel[:, :step] == t[:, None]).any(axis=1) if step else np.zeros(len(t), bool)
        sel[:, step] = np.where(taken, j, t)
    slot = np.concatenate([slot_w, np.repeat(long_, cap)])
    off = np.concatenate([off_w, sel.reshape(-1)])
    scale = np.concatenate(
        [np.ones(len(slot_w), np.float32), np.repeat((d / cap).astype(np.float32), cap)]
    )
    return slot, off, scale


def _fanout_at(fanout: list[int] | None, hop: int) -> int:
    """Cap at ``hop``; <= 0 or missing means unlimited (returned as 0)."""
    if not fanout or hop >= len(fanout) or fanout[hop] is None or fanout[hop] <= 0:
        return 0
    return int(fanout[hop])


def _capped(cap: int, n: int, max_frontier: int) -> int:
    """The hop's fanout after ``max_frontier`` (at most that many draws for ``n`` nodes)."""
    if max_frontier <= 0 or n == 0:
        return cap
    limit = max(1, max_frontier // n)
    return limit if cap <= 0 else min(cap, limit)


def _positions(frontier: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Slot of every id in ``frontier`` (all ids must be present)."""
    sorter = np.argsort(frontier, kind="stable")
    return sorter[np.searchsorted(frontier, ids, sorter=sorter)]


Sampled = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row slot, neighbour id, weight)


def _sample_relation(rows: RowSource, rel: str, nodes: np.ndarray, cap: int, salt: int) -> Sampled:
    slot, off, scale = draw_offsets(rows.degrees(rel, nodes), cap, node_keys(salt, nodes))
    dst, w = rows.entries(rel, nodes[slot], off)
    return slot, dst, (w * scale).astype(np.float32)


def _sample_union(
    rows: RowSource, rels: list[str], nodes: np.ndarray, cap: int, salt: int
) -> dict[str, Sampled]:
    """``cap`` draws per node over the concatenated rows of ``rels`` (one degree per node)."""
    degs = np.stack([rows.degrees(r, nodes) for r in rels])  # [R, n]
    ends = np.cumsum(degs, axis=0)
    slot, off, scale = draw_offsets(ends[-1], cap, node_keys(salt, nodes))
    which = (off[None, :] >= ends[:, slot]).sum(0)  # relation of each drawn offset
    out: dict[str, Sampled] = {}
    for i, r in enumerate(rels):
        m = which == i
        s, o = slot[m], off[m] - (ends[i, slot[m]] - degs[i, slot[m]])
        dst, w = rows.entries(r, nodes[s], o)
        out[r] = (s, dst, (w * scale[m]).astype(np.float32))
    return out


def sample_blocks(
    seeds: dict[str, np.ndarray | torch.Tensor],
    graph: HeteroGraph,
    layers: int,
    fanout: list[int] | None = None,
    rng: np.random.Generator | None = None,
    *,
    fanout_over: str = "relation",
    max_frontier: int = 0,
    expand: str = "all",
    rows: RowSource | None = None,
) -> Blocks:
    """Sample ``layers`` hops of neighbourhood blocks around ``seeds``.

    Args:
        seeds: ``{node_type: int64[B_t]}`` global ids (repeats allowed, e.g. pos and neg items).
        graph: the relations to propagate over (names, node types and counts).
        layers: number of hops L.
        fanout: per-hop cap on neighbours per node (per relation, or over all relations with
            ``fanout_over="union"``); <= 0 / missing = unlimited.
        rng: numpy Generator; seed it from (seed, epoch, global step) (``step_rng``) so every
            rank draws the same neighbours for a node whatever the batch or world size.
        fanout_over: ``"relation"`` or ``"union"`` (see the module docstring).
        max_frontier: at most this many sampled neighbours per hop and source type (0 = no cap;
            at least one per expanded node).
        expand: ``"all"`` (block-wise propagation) or ``"new"`` (each row once: subgraph).
        rows: where adjacency rows come from (default: the graph's own CSR).

    Example::

        blocks = sample_blocks({"user": users, "item": items}, g, layers=2, fanout=[10, 5], rng=rng)
        rows = {t: table[t][ids] for t, ids in blocks.input_nodes().items()}
        per_layer = propagate_blocks(blocks, rows)  # L+1 dicts of [S_0[t], D]
    """
    if fanout_over not in ("relation", "union"):
        raise ValueError(f"graph.fanout_over: {fanout_over!r} is not one of relation, union")
    if expand not in ("all", "new"):
        raise ValueError(f"expand: {expand!r} is not one of all, new")
    rng = rng if rng is not None else np.random.default_rng(0)
    src_rows: RowSource = rows if rows is not None else LocalRows(graph)
    rels = {r.name: (r.src, r.dst) for r in graph.relations}
    by_src: dict[str, list[str]] = {}
    for n, (s, _) in rels.items():
        by_src.setdefault(s, []).append(n)
    frontier: dict[str, np.ndarray] = {}
    seed_index: dict[str, torch.Tensor] = {}
    for t, ids in seeds.items():
        arr = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        arr = arr.astype(np.int64, copy=False)
        if len(arr) and (arr.min() < 0 or arr.max() >= graph.num_nodes[t]):
            raise ValueError(f"seed ids of {t!r} out of range [0, {graph.num_nodes[t]})")
        uniq, inv = np.unique(arr, return_inverse=True)
        frontier[t] = uniq
        seed_index[t] = torch.from_numpy(inv.reshape(-1).astype(np.int64))
    # one salt per (hop, source type or relation), always drawn in the same order: the same rng
    # state gives every rank the same per-node samples; expand="new" samples a row once, at
    # whichever hop reaches it, so there the salts must not depend on the hop
    keys = sorted(by_src) if fanout_over == "union" else sorted(rels)
    salts = [{k: int(rng.integers(0, 2**62)) for k in keys} for _ in range(layers)]
    if expand == "new":
        salts = [salts[0]] * layers
    frontiers = [frontier]
    blocks: list[dict[str, BlockEdges]] = []
    done = {t: 0 for t in frontier}  # expand="new": frontier[t][:done[t]] already expanded
    for hop in range(layers):
        cap = _fanout_at(fanout, hop)
        sampled: dict[str, Sampled] = {}
        for t, names in sorted(by_src.items()):
            lo = done.get(t, 0) if expand == "new" else 0
            nodes = frontier.get(t, np.zeros(0, np.int64))[lo:]
            if len(nodes) == 0:
                continue
            if fanout_over == "union":
                got = _sample_union(
                    src_rows, names, nodes, _capped(cap, len(nodes), max_frontier), salts[hop][t]
                )
            else:
                c = _capped(cap, len(nodes), max_frontier)
                got = {n: _sample_relation(src_rows, n, nodes, c, salts[hop][n]) for n in names}
            for n, (slot, dst, w) in got.items():
                sampled[n] = (slot + lo, dst, w)
        done = {t: len(v) for t, v in frontier.items()}
        nxt = dict(frontier)
        for t in sorted({rels[n][1] for n in sampled}):
            cand = np.unique(np.concatenate([sampled[n][1] for n in sampled if rels[n][1] == t]))
            old = nxt.get(t, np.zeros(0, np.int64))
            new = cand[~np.isin(cand, old)] if len(old) else cand
            nxt[t] = np.concatenate([old, new])
        blk = {}
        for n, (slot, dst, w) in sampled.items():
            blk[n] = BlockEdges(
                torch.from_numpy(slot.astype(np.int64, copy=False)),
                torch.from_numpy(_positions(nxt[rels[n][1]], dst)),
                torch.from_numpy(w),
            )
        blocks.append(blk)
        frontiers.append(nxt)
        frontier = nxt
    return Blocks(
        frontiers=[{t: torch.from_numpy(v) for t, v in f.items()} for f in frontiers],
        blocks=blocks,
        relations=rels,
        seed_index=seed_index,
    )
