"""Multi-hop neighbourhood blocks (DGL / GraphSAGE style) for ``sampled`` graph propagation.

``sample_blocks(seeds, graph, layers, fanout, rng)`` grows frontiers outward from the seeds:

* ``frontiers[0][t]`` = the distinct seed ids of node type ``t``;
* ``frontiers[k + 1][t]`` = ``frontiers[k][t]`` (as a prefix, so every node keeps its slot) followed
  by the new neighbours sampled for the nodes of ``frontiers[k]``;
* ``blocks[k]`` holds, per relation, the sampled edges from ``frontiers[k]`` (rows, outputs) to
  ``frontiers[k + 1]`` (columns, inputs) with rescaled weights.

Only ``frontiers[layers]`` needs embedding rows (one lookup through the sharded tables); then
:func:`distrec.graph.propagate.propagate_blocks` applies ``blocks[layers-1] ... blocks[0]``.

Each node keeps up to ``fanout[k]`` neighbours per relation at hop ``k``, drawn uniformly without
replacement; a kept edge's weight is multiplied by ``deg / fanout`` (each neighbour is kept with
probability ``fanout / deg``), so every layer is an unbiased estimate of the full product, and
with unlimited fanout (``-1``, ``0`` or a missing entry) the blocks are exact.

Shapes: S_k[t] nodes of type t in frontier k; E_kr edges of relation r in block k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def _fanout_at(fanout: list[int] | None, hop: int) -> int:
    """Cap at ``hop``; <= 0 or missing means unlimited (returned as 0)."""
    if not fanout or hop >= len(fanout) or fanout[hop] is None or fanout[hop] <= 0:
        return 0
    return int(fanout[hop])


def _hash_uniform(salt: int, keys: np.ndarray) -> np.ndarray:
    """Counter-based uniform floats in [0, 1) from (salt, key) (splitmix64 finaliser): float64[E]."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _gather_edges(
    indptr: np.ndarray, nodes: np.ndarray, cap: int, salt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge positions of ``nodes``' rows, at most ``cap`` per row (0 = all).

    The random key of an edge depends only on (salt, its CSR position), so a node's sample does
    not depend on which other nodes share the batch: ranks that hold different slices of a global
    batch draw the same neighbours for the same node, as a single rank would.

    Returns (row slot int64[E], edge position int64[E], weight scale float32[E]).
    """
    starts = indptr[nodes]
    degs = indptr[nodes + 1] - starts
    total = int(degs.sum())
    slot = np.repeat(np.arange(len(nodes), dtype=np.int64), degs)
    offsets = np.cumsum(degs) - degs
    within = np.arange(total, dtype=np.int64) - np.repeat(offsets, degs)
    pos = np.repeat(starts, degs) + within
    if cap <= 0 or total == 0 or int(degs.max()) <= cap:
        return slot, pos, np.ones(total, np.float32)
    # Uniform sample without replacement inside each row: order each row's edges by a random key
    # and keep the first `cap` (rows stay contiguous because slot is the primary sort key, so the
    # unsorted `within` is also the rank inside the row after sorting).
    order = np.lexsort((_hash_uniform(salt, pos), slot))
    keep = within < cap
    slot, pos = slot[order][keep], pos[order][keep]
    scale = np.maximum(degs[slot] / cap, 1.0).astype(np.float32)
    return slot, pos, scale


def _positions(frontier: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Slot of every id in ``frontier`` (all ids must be present)."""
    sorter = np.argsort(frontier, kind="stable")
    return sorter[np.searchsorted(frontier, ids, sorter=sorter)]


def sample_blocks(
    seeds: dict[str, np.ndarray | torch.Tensor],
    graph: HeteroGraph,
    layers: int,
    fanout: list[int] | None = None,
    rng: np.random.Generator | None = None,
) -> Blocks:
    """Sample ``layers`` hops of neighbourhood blocks around ``seeds``.

    Args:
        seeds: ``{node_type: int64[B_t]}`` global ids (repeats allowed, e.g. pos and neg items).
        graph: the relations to propagate over.
        layers: number of hops L.
        fanout: per-hop cap on neighbours per node and relation; <= 0 / missing = unlimited.
        rng: numpy Generator; seed it from (seed, epoch, global step) (``step_rng``) so every
            rank draws the same neighbours for a node whatever the batch or world size.

    Example::

        blocks = sample_blocks({"user": users, "item": items}, g, layers=2, fanout=[10, 5], rng=rng)
        rows = {t: table[t][ids] for t, ids in blocks.input_nodes().items()}
        per_layer = propagate_blocks(blocks, rows)  # L+1 dicts of [S_0[t], D]
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    rels = {r.name: r for r in graph.relations}
    frontier: dict[str, np.ndarray] = {}
    seed_index: dict[str, torch.Tensor] = {}
    for t, ids in seeds.items():
        arr = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        arr = arr.astype(np.int64, copy=False)
        if len(arr) and (arr.min() < 0 or arr.max() >= graph.num_nodes[t]):
            raise ValueError(f"seed ids of {t!r} out of range [0, {graph.num_nodes[t]})")
        uniq, inv = np.unique(arr, return_inverse=True)
        frontier[t] = uniq
        seed_index[t] = torch.from_numpy(inv.astype(np.int64))
    frontiers = [frontier]
    blocks: list[dict[str, BlockEdges]] = []
    for hop in range(layers):
        cap = _fanout_at(fanout, hop)
        sampled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for r in rels.values():
            # one salt per (hop, relation), drawn whatever the frontier holds: the same rng state
            # on every rank gives every rank the same per-node samples
            salt = int(rng.integers(0, 2**62))
            if r.src not in frontier or len(frontier[r.src]) == 0:
                continue
            slot, pos, scale = _gather_edges(r.adj.indptr, frontier[r.src], cap, salt)
            sampled[r.name] = (slot, r.adj.indices[pos], r.adj.weights[pos] * scale)
        nxt = dict(frontier)
        for t in {rels[n].dst for n in sampled}:
            cand = np.concatenate([sampled[n][1] for n in sampled if rels[n].dst == t])
            old = nxt.get(t, np.zeros(0, np.int64))
            new = np.setdiff1d(np.unique(cand), old, assume_unique=True)
            nxt[t] = np.concatenate([old, new])
        blk = {}
        for n, (slot, dst, w) in sampled.items():
            cols = _positions(nxt[rels[n].dst], dst)
            blk[n] = BlockEdges(
                torch.from_numpy(slot),
                torch.from_numpy(cols),
                torch.from_numpy(w.astype(np.float32)),
            )
        blocks.append(blk)
        frontiers.append(nxt)
        frontier = nxt
    return Blocks(
        frontiers=[{t: torch.from_numpy(v) for t, v in f.items()} for f in frontiers],
        blocks=blocks,
        relations={n: (r.src, r.dst) for n, r in rels.items()},
        seed_index=seed_index,
    )
