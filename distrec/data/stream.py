"""Rank-partitioned streaming of an epoch's training pairs from a bundle's ``ui.<behavior>`` graphs.
Torch-free.

Why the graphs: ``graphs/ui.<b>`` holds one row per user with all of that user's unique train
items, partitioned and sorted by user (src) range. A rank that reads a user range therefore has
every positive of its users (exact negatives, exact dedup) and nothing else; the round-robin
``interactions`` files scatter a user's rows over every file.

Layout of an epoch (P virtual shards, W ranks, G global batch, q_v = shard v's quota)::

    shard v      = users [floor(v U / P), floor((v + 1) U / P)), run by rank v % W
    fragments    = the shard's row groups (footer statistics), in an order shuffled by (seed, epoch, v)
    windows      = consecutive fragments of that order holding >= buffer_rows pairs: the bounded
                   shuffle buffer; its pairs are permuted by (seed, epoch, v, window)
    global step t takes pairs [t q_v, (t + 1) q_v) of every shard's stream; past its end a shard
                   wraps around to its own start (the wrap-around fill, flagged ``fill``)
    steps        = max_v ceil(n_v / q_v), from footer counts: the same on every rank, no collective

Shard v's stream does not depend on W, so global batch t is the same set of pairs at any world
size with P % W == 0, and a position (epoch, step) maps to (window, offset) per shard by
arithmetic: resuming reads one window per shard and builds no earlier batch.

Example::

    plan = EdgePlan(bundle, ["buy"], partitions=16)
    stream = RankStream(plan, rank=0, world=2, global_batch=1024, seed=0)
    for part in stream.step_slices(epoch=0, step=0):   # one ShardSlice per own shard
        part.users, part.items, part.local, part.window.pos["buy"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distrec.data.bundle import Bundle, GraphRows
from distrec.data.csr import Csr
from distrec.data.schema import ui_graph

DEFAULT_PARTITIONS = 16  # virtual shards of a format-1 bundle (no ``partitions`` in its manifest)
DEFAULT_BUFFER_ROWS = 1 << 19  # pairs per shuffle window and shard (data.shuffle_buffer)


def bundle_partitions(bundle: Bundle, override: int = 0, global_batch: int = 0) -> int:
    """Virtual shard count P: ``override`` if > 0, else the manifest's ``partitions``, else (a
    format-1 bundle) 16, lowered to the largest power of two <= ``global_batch`` when that is
    smaller (each shard contributes at least one pair per step)."""
    if override > 0:
        return override
    p = int(getattr(bundle.manifest, "partitions", 0) or 0)
    if p:
        return p
    p = DEFAULT_PARTITIONS
    while global_batch and p > global_batch:
        p //= 2
    return p


def check_layout(state: dict[str, Any], layout: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint's data position ``state`` laid out differently from
    this run's ``layout`` (partitions, batch sizes, buffer rows, seed): the streams would differ."""
    for k, mine in layout.items():
        if k in state and state[k] != mine:
            raise SystemExit(
                f"resume: the checkpoint's data position has {k}={state[k]}, this run {mine}; "
                "resume with the same data.batch_size / data.partitions / data.shuffle_buffer / "
                "run.seed"
            )


@dataclass
class Fragment:
    """A src sub-range ``[lo, hi)`` of one shard; ``rows`` its pairs (exact when ``exact``)."""

    lo: int
    hi: int
    rows: int
    exact: bool = True


class EdgePlan:
    """The P shards of the pairs of ``behaviors`` (their union when several) and their fragments,
    from Parquet footers. ``pos_behaviors`` are the graphs every window also loads (a sample's
    per-behavior positives); they include ``behaviors``."""

    def __init__(
        self,
        bundle: Bundle,
        behaviors: list[str],
        partitions: int = 0,
        *,
        pos_behaviors: list[str] | None = None,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
    ) -> None:
        if not behaviors:
            raise ValueError("EdgePlan needs at least one behavior")
        self.bundle, self.behaviors = bundle, list(behaviors)
        self.pos_behaviors = list(dict.fromkeys(list(pos_behaviors or []) + self.behaviors))
        self.partitions = bundle_partitions(bundle, partitions)
        self.buffer_rows = max(1, buffer_rows)
        self.num_users = bundle.manifest.num_users
        self.num_items = bundle.manifest.num_items
        p, u = self.partitions, self.num_users
        self.bounds = [(v * u // p, (v + 1) * u // p) for v in range(p)]
        self.fragments = [self._fragments(lo, hi) for lo, hi in self.bounds]

    def _fragments(self, lo: int, hi: int) -> list[Fragment]:
        """Tile ``[lo, hi)`` along the row groups of the first behavior's graph; counts of the
        union of several behaviors are bounded by their sum (exact after reading, see rows())."""
        if hi <= lo:
            return []
        first = ui_graph(self.behaviors[0])
        groups = [
            g
            for g in self.bundle.row_groups(f"graphs/{first}")
            if g.rows and g.src_min is not None and g.src_max >= lo and g.src_min < hi  # type: ignore[operator]
        ]
        groups.sort(key=lambda g: g.src_min)  # type: ignore[arg-type, return-value]
        sorted_ok = all(
            a.src_max < b.src_min  # type: ignore[operator]
            for a, b in zip(groups, groups[1:], strict=False)
        )
        if not groups or not sorted_ok:  # unsorted graph: one fragment, counted by reading it
            cuts = [lo, hi]
        else:
            cuts = [lo] + [max(lo, int(g.src_min)) for g in groups[1:]] + [hi]  # type: ignore[arg-type]
        frags = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            if b > a:
                frags.append(self._count(a, b, groups if sorted_ok else []))
        return frags

    def _count(self, lo: int, hi: int, groups: list) -> Fragment:  # type: ignore[type-arg]
        inside = [g for g in groups if g.src_max >= lo and g.src_min < hi]
        whole = len(inside) == 1 and inside[0].src_min >= lo and inside[0].src_max < hi
        if len(self.behaviors) == 1 and whole:
            return Fragment(lo, hi, inside[0].values)
        if len(self.behaviors) == 1:  # a row group straddles the range (format-1 bundle): read
            read = self.bundle.graph_rows(ui_graph(self.behaviors[0]), lo, hi)
            return Fragment(lo, hi, int(read.dst.shape[0]))
        # union of behaviors: the sum of each graph's pairs in range bounds it (footers only)
        bound = 0
        for b in self.behaviors:
            for g in self.bundle.row_groups(f"graphs/{ui_graph(b)}"):
                if g.src_min is not None and g.src_max >= lo and g.src_min < hi:  # type: ignore[operator]
                    bound += g.values
        return Fragment(lo, hi, bound, exact=False)

    def shard_rows(self, v: int) -> int:
        """Pairs of shard v (an upper bound for a union of behaviors)."""
        return sum(f.rows for f in self.fragments[v])

    def total_rows(self) -> int:
        return sum(self.shard_rows(v) for v in range(self.partitions))


@dataclass
class Window:
    """The loaded fragments of one shuffle window: their users and per-behavior positives.

    ``users`` int64 [n] global ids (ascending); ``pos[b]`` a :class:`Csr` over local rows 0..n-1;
    ``local`` / ``items`` int64 [E]: the window's pairs (local user row, item) in shuffled order.
    """

    users: np.ndarray
    pos: dict[str, Csr]
    local: np.ndarray
    items: np.ndarray
    src_rows_read: int = 0
    _union: Csr | None = None

    @property
    def rows(self) -> int:
        return int(self.local.shape[0])

    def union(self, behaviors: list[str], num_items: int) -> Csr:
        """Positives over several behaviors (local rows), built once per window."""
        if self._union is None:
            self._union = Csr.from_pairs(
                np.concatenate([self.pos[b].sources() for b in behaviors]),
                np.concatenate([self.pos[b].indices for b in behaviors]),
                int(self.users.shape[0]),
                num_items,
            )
        return self._union


@dataclass
class ShardSlice:
    """Shard ``shard``'s pairs of one step: ``users`` / ``items`` / ``local`` int64 [q] (local:
    rows of ``window``), ``fill`` bool [q] (True for wrap-around fill pairs)."""

    shard: int
    users: np.ndarray
    items: np.ndarray
    local: np.ndarray
    fill: np.ndarray
    window: Window


def _load_window(plan: EdgePlan, frags: list[Fragment], perm_seed: list[int]) -> Window:
    parts: dict[str, list[GraphRows]] = {b: [] for b in plan.pos_behaviors}
    for f in sorted(frags, key=lambda f: f.lo):
        for b in plan.pos_behaviors:
            # positives only: the weights are not read
            parts[b].append(plan.bundle.graph_rows(ui_graph(b), f.lo, f.hi, weights=False))
    read = sum(int(g.src.shape[0]) for gs in parts.values() for g in gs)
    cat = {b: _concat(gs) for b, gs in parts.items()}
    users = np.unique(np.concatenate([g.src for g in cat.values()]))
    pos = {}
    for b, g in cat.items():
        lens = np.zeros(users.shape[0], np.int64)
        lens[np.searchsorted(users, g.src)] = np.diff(g.indptr)
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        pos[b] = Csr(indptr, g.dst, g.w, int(users.shape[0]), plan.num_items)
    win = Window(users, pos, np.zeros(0, np.int64), np.zeros(0, np.int64), read)
    one = len(plan.behaviors) == 1
    rows = pos[plan.behaviors[0]] if one else win.union(plan.behaviors, plan.num_items)
    # int32 halves the buffer (users per window and item ids fit); slices are cast back
    order = np.random.default_rng(perm_seed).permutation(rows.nnz)
    lens = np.diff(rows.indptr).astype(np.int32, copy=False)
    win.local = np.repeat(np.arange(lens.shape[0], dtype=np.int32), lens)[order]
    win.items = rows.indices[order].astype(np.int32)
    return win


def _concat(gs: list[GraphRows]) -> GraphRows:
    if len(gs) == 1:
        return gs[0]
    lens = np.concatenate([np.diff(g.indptr) for g in gs])
    return GraphRows(
        np.concatenate([g.src for g in gs]),
        np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        np.concatenate([g.dst for g in gs]),
        np.concatenate([g.w for g in gs]),
    )


@dataclass
class _ShardEpoch:
    windows: list[list[Fragment]]
    starts: np.ndarray  # int64 [windows + 1]: first stream position of each window
    cache: dict[int, Window] = field(default_factory=dict)


class RankStream:
    """The shards of one rank and their per-step slices (module docstring).

    ``reads`` logs every window load as (shard, epoch, window, src rows read): a test checks that
    a rank reads only its own shards' rows, each once per epoch before the fill.
    """

    def __init__(self, plan: EdgePlan, rank: int, world: int, global_batch: int, seed: int) -> None:
        p = plan.partitions
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of size {world}")
        # Checked when training starts (evaluation runs at any world size): unequal shard counts
        # per rank would mean unequal rank batches, which row-wise sharded lookups refuse.
        self.error: str | None = None
        if p % world:
            self.error = (
                f"world size {world} does not divide the bundle's {p} partitions: use a world "
                f"size that divides {p}, or data.partitions=<multiple of {world}>"
            )
        elif global_batch < p:
            self.error = f"data.batch_size {global_batch} is smaller than the {p} partitions"
        self.plan, self.rank, self.world, self.seed = plan, rank, world, seed
        self.global_batch = global_batch
        self.shards = [v for v in range(p) if v % world == rank]
        self.quota = [max(1, global_batch // p + (v < global_batch % p)) for v in range(p)]
        self.steps = max((-(-plan.shard_rows(v) // self.quota[v]) for v in range(p)), default=0)
        self.reads: list[tuple[int, int, int, int]] = []
        self._epochs: dict[tuple[int, int], _ShardEpoch] = {}
        self._exact: dict[int, list[int]] = {}

    @property
    def rank_batch(self) -> int:
        """Pairs this rank trains per step."""
        return sum(self.quota[v] for v in self.shards)

    def num_steps(self) -> int:
        if self.error:
            raise SystemExit(self.error)
        return self.steps

    def _fragment_rows(self, v: int) -> list[int]:
        """Exact pair count of each fragment of an own shard (reads it when only bounded)."""
        if v not in self._exact:
            frags = self.plan.fragments[v]
            if all(f.exact for f in frags):
                self._exact[v] = [f.rows for f in frags]
            else:
                self._exact[v] = [self._load([f], [0]).rows for f in frags]
        return self._exact[v]

    def _epoch(self, v: int, epoch: int) -> _ShardEpoch:
        key = (v, epoch)
        if key not in self._epochs:
            for k in [k for k in self._epochs if k[0] == v]:  # one epoch per shard is enough
                del self._epochs[k]
            frags = self.plan.fragments[v]
            rows = self._fragment_rows(v)
            order = np.random.default_rng([self.seed, epoch, v, 0xF8A6]).permutation(len(frags))
            windows: list[list[Fragment]] = []
            sizes: list[int] = []
            for i in order:
                if not windows or sizes[-1] >= self.plan.buffer_rows:
                    windows.append([])
                    sizes.append(0)
                windows[-1].append(frags[int(i)])
                sizes[-1] += rows[int(i)]
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self._epochs[key] = _ShardEpoch(windows, starts)
        return self._epochs[key]

    def _window(self, v: int, epoch: int, w: int) -> Window:
        se = self._epoch(v, epoch)
        if w not in se.cache:
            se.cache.clear()  # one window per shard at a time: the shuffle buffer's bound
            win = self._load(se.windows[w], [self.seed, epoch, v, w, 0x5B])
            self.reads.append((v, epoch, w, win.src_rows_read))
            se.cache[w] = win
        return se.cache[w]

    def _load(self, frags: list[Fragment], perm_seed: list[int]) -> Window:
        """Load one window's fragments, its rows permuted by ``perm_seed`` (subclasses stream
        other tables: :class:`distrec.data.seq_stream.SeqStream`)."""
        return _load_window(self.plan, frags, perm_seed)

    def shard_slice(self, v: int, epoch: int, step: int) -> ShardSlice:
        """Shard v's pairs of global step ``step`` of ``epoch`` (v must be an own shard)."""
        q = self.quota[v]
        se = self._epoch(v, epoch)
        n = int(se.starts[-1])
        empty = np.zeros(0, np.int64)
        if n == 0 or q == 0:
            win = Window(empty, {}, empty, empty)
            return ShardSlice(v, empty, empty, empty, np.zeros(0, bool), win)
        pos = np.arange(step * q, (step + 1) * q, dtype=np.int64)
        fill = pos >= n
        pos %= n
        w_of = np.searchsorted(se.starts, pos, side="right") - 1
        if np.all(w_of == w_of[0]):  # the usual case: one window
            win = self._window(v, epoch, int(w_of[0]))
            off = pos - se.starts[w_of[0]]
            local = win.local[off].astype(np.int64)
            items = win.items[off].astype(np.int64)
            return ShardSlice(v, win.users[local], items, local, fill, win)
        # the step crosses a window boundary: a small window of just the step's users
        picks = []
        items = np.empty(q, np.int64)
        g_users = np.empty(q, np.int64)
        for w in np.unique(w_of):
            win = self._window(v, epoch, int(w))  # loading w + 1 drops w from the cache
            m = w_of == w
            off = pos[m] - se.starts[w]
            picks.append((win, np.unique(win.local[off])))
            g_users[m] = win.users[win.local[off]]
            items[m] = win.items[off]
        sub = _rows_window(picks, self.plan)
        local = np.searchsorted(sub.users, g_users)
        return ShardSlice(v, g_users, items, local, fill, sub)

    def step_slices(self, epoch: int, step: int) -> list[ShardSlice]:
        """One :class:`ShardSlice` per own shard, in shard order."""
        return [self.shard_slice(v, epoch, step) for v in self.shards]

    def position(self, epoch: int, step: int) -> dict[str, object]:
        """The data position before global step ``step`` of ``epoch``: per own shard the window
        and offset its stream is at (what a checkpoint records; resuming recomputes it)."""
        out: dict[str, object] = {}
        for v in self.shards:
            se = self._epoch(v, epoch)
            n = int(se.starts[-1])
            p = step * self.quota[v]
            w = int(np.searchsorted(se.starts, p % n, side="right") - 1) if n else 0
            out[str(v)] = {
                "consumed": p,
                "window": w,
                "offset": int(p % n - se.starts[w]) if n else 0,
            }
        return out


def _rows_window(picks: list[tuple[Window, np.ndarray]], plan: EdgePlan) -> Window:
    """A window holding only some local rows of other windows (users distinct across them):
    their users (ascending) and per-behavior positives."""
    users = np.concatenate([w.users[rows] for w, rows in picks])
    order = np.argsort(users, kind="stable")
    pos = {}
    for b in plan.pos_behaviors:
        lens = np.concatenate([np.diff(w.pos[b].indptr)[rows] for w, rows in picks])
        dst = np.concatenate([_gather_rows(w.pos[b], rows)[0] for w, rows in picks])
        wt = np.concatenate([_gather_rows(w.pos[b], rows)[1] for w, rows in picks])
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)[order]
        lens = lens[order]
        take = np.repeat(starts, lens) + (
            np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        )
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        wt = wt[take] if wt.shape[0] else wt
        pos[b] = Csr(indptr, dst[take], wt, int(users.shape[0]), plan.num_items)
    empty = np.zeros(0, np.int64)
    return Window(users[order], pos, empty, empty)


def _gather_rows(csr: Csr, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours and weights of ``rows`` of ``csr``, concatenated in row order."""
    lo, lens = csr.indptr[rows], np.diff(csr.indptr)[rows]
    idx = np.repeat(lo, lens) + (
        np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    )
    w = csr.weights[idx] if csr.weights.shape[0] else csr.weights  # windows skip weights
    return csr.indices[idx], w
