"""Node ownership: one partition of users, items and groups across ranks (ARCHITECTURE.md).

Rank r owns rows ``[r * ceil(N_t / W), (r + 1) * ceil(N_t / W))`` of every node type t, the same
blocks as TorchRec's row-wise shards (``torchrec.distributed.sharding_plan.
_calculate_rw_shard_sizes_and_offsets``: 10 rows on 4 ranks -> 3, 3, 3, 1; 5 on 4 -> 2, 2, 1, 0)
and as :func:`distrec.eval.ranking.item_slice`. So a rank's own rows are its local shard: looking
them up through a row-wise sharded EmbeddingBagCollection moves nothing between ranks.

Graph propagation works in a *flat* node space: the types in order, type t's ids offset by the
counts before it (CIGF's users-then-items space; LightGCN's bipartite graph is one relation of
that space). On rank r the *local* rows are r's own rows of each type, type by type.

Example::

    part = NodePartition({"user": 10, "item": 5}, world=4, rank=1)
    part.range("user", 1)                  # (3, 6)
    part.owner("item", torch.tensor([4]))  # tensor([2])
    part.flat_owner(torch.tensor([12]))    # item 2 -> rank 1
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distrec.data.bundle import Bundle, graph_shape
from distrec.data.csr import Csr


def block_size(n: int, world: int) -> int:
    """Rows per rank of an ``n``-row table on ``world`` ranks (TorchRec row-wise: ceil)."""
    return max(1, math.ceil(n / world))


class NodePartition:
    """Ownership of typed node ids over ``world`` ranks, seen from ``rank``.

    ``num_nodes``: ``{type: N_t}`` in flat-space order.
    """

    def __init__(self, num_nodes: dict[str, int], world: int, rank: int = 0) -> None:
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"NodePartition: rank {rank} of world {world}")
        self.num_nodes = dict(num_nodes)
        self.types = list(num_nodes)
        self.world, self.rank = world, rank
        self.blocks = {t: block_size(n, world) for t, n in num_nodes.items()}
        self.offsets: dict[str, int] = {}
        off = 0
        for t, n in num_nodes.items():
            self.offsets[t] = off
            off += n
        self.total = off
        # [T+1] flat offsets, for searchsorted
        self._bounds = torch.tensor([*self.offsets.values(), off], dtype=torch.int64)
        # local layout of every rank: [W, T] start of type t inside rank w's local rows
        counts = torch.tensor(
            [[self._count(t, w) for t in self.types] for w in range(world)], dtype=torch.int64
        )
        self._local_start = torch.cumsum(counts, 1) - counts
        self.num_local = [int(c) for c in counts.sum(1)]

    # ------------------------------------------------------------------ one type
    def range(self, t: str, rank: int | None = None) -> tuple[int, int]:
        """Ids ``[lo, hi)`` of type ``t`` owned by ``rank`` (default: this rank)."""
        r = self.rank if rank is None else rank
        b, n = self.blocks[t], self.num_nodes[t]
        lo = min(r * b, n)
        return lo, min(lo + b, n)

    def _count(self, t: str, rank: int) -> int:
        lo, hi = self.range(t, rank)
        return hi - lo

    def own(self, t: str) -> torch.Tensor:
        """This rank's ids of type ``t``, ascending: [n_own]."""
        lo, hi = self.range(t)
        return torch.arange(lo, hi, dtype=torch.int64)

    def owner(self, t: str, ids: torch.Tensor) -> torch.Tensor:
        """Owning rank of each id of type ``t``: [m] int64."""
        return torch.div(ids.to(torch.int64), self.blocks[t], rounding_mode="floor")

    # ------------------------------------------------------------------ flat space
    def flat(self, t: str, ids: torch.Tensor) -> torch.Tensor:
        """Flat ids of type-``t`` ids."""
        return ids.to(torch.int64) + self.offsets[t]

    def local_flat_ids(self, rank: int | None = None) -> torch.Tensor:
        """Flat ids of ``rank``'s local rows, in local order: [num_local[rank]]."""
        r = self.rank if rank is None else rank
        parts = [
            torch.arange(*self.range(t, r), dtype=torch.int64) + self.offsets[t] for t in self.types
        ]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def _type_of(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self._bounds, flat, right=True) - 1

    def flat_owner(self, flat: torch.Tensor) -> torch.Tensor:
        """Owning rank of each flat id: [m] int64."""
        flat = flat.to(torch.int64)
        ti = self._type_of(flat)
        blocks = torch.tensor([self.blocks[t] for t in self.types], dtype=torch.int64)
        return torch.div(flat - self._bounds[ti], blocks[ti], rounding_mode="floor")

    def flat_local(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(owner [m], position inside the owner's local rows [m]) of each flat id."""
        flat = flat.to(torch.int64)
        ti = self._type_of(flat)
        blocks = torch.tensor([self.blocks[t] for t in self.types], dtype=torch.int64)
        rel = flat - self._bounds[ti]
        owner = torch.div(rel, blocks[ti], rounding_mode="floor")
        pos = rel - owner * blocks[ti] + self._local_start[owner, ti]
        return owner, pos

    def local_index(self, t: str, ids: torch.Tensor) -> torch.Tensor:
        """Positions in this rank's local rows of its own type-``t`` ids."""
        lo, _ = self.range(t)
        return ids.to(torch.int64) - lo + int(self._local_start[self.rank, self.types.index(t)])


def own_rows(bundle: Bundle, name: str, lo: int, hi: int) -> Csr:
    """Rows ``[lo, hi)`` of bundle graph ``name`` as a Csr [hi - lo, N_dst] (row k = node lo + k).

    The one place a rank reads its adjacency rows: :meth:`Bundle.graph_rows` reads only the row
    groups whose src range meets ``[lo, hi)``; rows absent from the table have no neighbours.
    """
    _, num_dst = graph_shape(name, bundle.manifest)
    g = bundle.graph_rows(name, lo, hi)
    deg = np.zeros(hi - lo, dtype=np.int64)
    deg[g.src - lo] = np.diff(g.indptr)  # src ascending: dst is already in row order
    indptr = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(deg, out=indptr[1:])
    return Csr(indptr, g.dst, np.asarray(g.w, dtype=np.float32), hi - lo, num_dst)
