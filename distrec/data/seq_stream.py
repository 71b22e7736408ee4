"""Rank-partitioned streaming of sequence samples (DisMIR, MDGR) and rank shares of eval rows.
Torch-free.

Two kinds of training table, one sample per (row, position):

* ``windows`` (``sequences``): row = a user's chronological items; position t >= 1 is a sample
  whose history is the last kappa items before t and whose positive is ``items[t]``;
* ``chunks`` (``eval/chunks/split=train``, MDGR's MovieLens protocol): row = a chunk; position
  j < len(targets) is a sample: history = the chunk's ``input``, positive ``targets[j]``,
  negative ``candidates[j]``.

Layout (the one of :mod:`distrec.data.stream`, with rows of a table instead of graph rows)::

    fragment   = one Parquet row group (or, when the table has fewer row groups than P, a row
                 range of one: the format-1 / tiny-bundle fallback, counted by reading lengths)
    shard v    = row groups j with j * P // n_groups == v (contiguous, W-independent)
    samples    = per fragment from footers: items values - rows (windows; every sequence holds
                 >= 1 item, checked on load), targets values (chunks; candidates >= targets per
                 row, checked on load)
    epoch      = RankStream: fragment order shuffled per (seed, epoch, v), windows of
                 >= buffer_rows samples permuted per (seed, epoch, v, window), global step t takes
                 samples [t q_v, (t + 1) q_v) of every shard, wrapping around (fill)

Eval rows (:class:`EvalShare`): the same P shards over the eval table; global eval step t takes
E / P rows of every shard, rank r evaluates (and reads) only its shards' rows; the step count is
the largest shard's, from footers, the same on every rank and W-independent.

Example::

    plan = SeqPlan(bundle, "sequences", kind="windows", columns=["items", "ts"], partitions=16)
    stream = SeqStream(plan, rank=0, world=2, global_batch=1024, seed=0, max_len=20)
    for s in stream.step_slices(epoch=0, step=0):   # one SeqSlice per own shard
        s.hist, s.hist_len, s.pos, s.fill
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from distrec.data.bundle import Bundle, list_column
from distrec.data.loader import eval_sample
from distrec.data.schema import BundleFormatError
from distrec.data.stream import DEFAULT_BUFFER_ROWS, Fragment, RankStream, Window, bundle_partitions

KINDS = ("windows", "chunks")


@dataclass
class GroupInfo:
    """One row group from its footer: ``values[col]`` = entries of list column ``col``."""

    file: str
    index: int
    rows: int
    row0: int  # global row number of its first row (table order)
    values: dict[str, int]


def footer_groups(bundle: Bundle, table: str, split: str | None) -> list[GroupInfo]:
    """Row groups of ``table`` (one split) in the bundle's file order, from footers only."""
    out: list[GroupInfo] = []
    row0 = 0
    for f in bundle.files(table, split):
        with bundle.fs.open_input_file(f) as fh:
            md = pq.ParquetFile(fh).metadata
        paths = [md.schema.column(j).path for j in range(md.num_columns)]
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            vals = {}
            for j, p in enumerate(paths):
                if "." in p:  # a list column's leaf: one level per entry, empty or null list
                    st = rg.column(j).statistics
                    nulls = int(st.null_count or 0) if st is not None else 0
                    vals[p.split(".", 1)[0]] = int(rg.column(j).num_values) - nulls
            out.append(GroupInfo(f, i, int(rg.num_rows), row0, vals))
            row0 += int(rg.num_rows)
    return out


Cols = dict[str, tuple[np.ndarray, np.ndarray]]


def read_rows(
    bundle: Bundle,
    table: str,
    where: str,
    pieces: list[tuple[str, int, int, int, int]],
    columns: list[str],
) -> tuple[np.ndarray, np.ndarray, Cols, int]:
    """Rows ``[lo, hi)`` of row groups ``(file, group, lo, hi, row0)`` (only those groups are
    read), concatenated: (users int64 [R], global row numbers int64 [R], list columns as
    (offsets [R + 1], values), rows read)."""
    tables = []
    read = 0
    for file, group, lo, hi, _ in pieces:
        t = bundle._read_file(table, file, ["user", *columns], None, [group])
        read += t.num_rows
        tables.append(t.slice(lo, hi - lo))
    empty = np.zeros(0, np.int64)
    users = np.concatenate([t.column("user").to_numpy() for t in tables] or [empty])
    rows0 = np.concatenate([p[4] + np.arange(p[3] - p[2]) for p in pieces] or [empty])
    cols: Cols = {}
    for c in columns:
        offs: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        base = 0
        for t in tables:
            o, v = list_column(t, c, where)
            offs.append(o[:-1] + base)
            base += int(o[-1])
            vals.append(v)
        off = np.concatenate([*offs, np.array([base], np.int64)]).astype(np.int64)
        cols[c] = (off, np.concatenate(vals) if vals else empty)
    return users.astype(np.int64), rows0.astype(np.int64), cols, read


@dataclass
class SeqFragment(Fragment):
    """Rows ``[lo, hi)`` of row group ``group`` of ``file`` (``rows``: its samples)."""

    file: str = ""
    group: int = 0
    row0: int = 0  # global row number of row ``lo``


class SeqPlan:
    """The P shards of a sequence-like table and their fragments (module docstring).

    ``columns``: the list columns a window loads (the first is the sample-defining one's
    history: ``items`` for windows, ``input`` for chunks; chunks also need ``targets`` and
    ``candidates``).
    """

    def __init__(
        self,
        bundle: Bundle,
        table: str,
        *,
        kind: str,
        columns: list[str],
        split: str | None = None,
        partitions: int = 0,
        global_batch: int = 0,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        num_items: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}; one of {KINDS}")
        self.bundle, self.table, self.split, self.kind = bundle, table, split, kind
        self.columns = list(dict.fromkeys(columns))
        self.num_items = num_items or bundle.manifest.num_items
        self.buffer_rows = max(1, buffer_rows)
        self.where = str(bundle.table_dir(table)) + (f"/split={split}" if split else "")
        groups = footer_groups(bundle, table, split)
        p = bundle_partitions(bundle, partitions, global_batch)
        self.partitions = p
        self.total_table_rows = sum(g.rows for g in groups)
        self.footer_only = len(groups) >= p
        self.fragments: list[list[Fragment]] = [[] for _ in range(p)]
        counted = {} if self.footer_only else self._read_counts(groups)
        for v, pieces in enumerate(deal_rows(groups, p)):
            for g, lo, hi in pieces:
                if self.footer_only:  # whole row groups, counted from footers
                    n, exact = self._footer_samples(g)
                else:  # too few row groups: row ranges, counted by reading their lengths
                    n, exact = int(counted[(g.file, g.index)][lo:hi].sum()), True
                self.fragments[v].append(
                    SeqFragment(lo, hi, n, exact, g.file, g.index, g.row0 + lo)
                )

    def _footer_samples(self, g: GroupInfo) -> tuple[int, bool]:
        """(samples, exact): chunks are bounded by min(targets, candidates) entries (the sum of
        per-row minima is exact only after reading: RankStream counts own fragments then)."""
        if self.kind == "windows":
            return g.values.get(self.columns[0], 0) - g.rows, True
        return min(g.values.get("targets", 0), g.values.get("candidates", 0)), False

    def _read_counts(self, groups: list[GroupInfo]) -> dict[tuple[str, int], np.ndarray]:
        """Samples per row of every row group (the fallback layout; reads list lengths)."""
        out = {}
        for g in groups:
            cols = [self.columns[0]] if self.kind == "windows" else ["targets", "candidates"]
            t = self.bundle._read_file(self.table, g.file, cols, None, [g.index])
            lens = [np.diff(list_column(t, c, self.where)[0]) for c in cols]
            out[(g.file, g.index)] = (
                np.maximum(lens[0] - 1, 0) if self.kind == "windows" else np.minimum(*lens)
            )
        return out

    def shard_rows(self, v: int) -> int:
        """Samples of shard v."""
        return sum(f.rows for f in self.fragments[v])

    def total_rows(self) -> int:
        return sum(self.shard_rows(v) for v in range(self.partitions))


@dataclass
class SeqWindow(Window):
    """Loaded fragments of one shuffle window. ``cols[c]`` = (offsets [R + 1], values) of list
    column c over the window's R rows; ``rows0`` int64 [R] global row numbers, ``users`` [R];
    ``local`` int32 [S] the sample's row, ``items`` int32 [S] its position in that row (target
    index t for windows, j for chunks), in shuffled order."""

    cols: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    rows0: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class SeqSlice:
    """Shard ``shard``'s samples of one step (q of them): ``hist`` ids (concatenated, oldest
    first) with ``hist_len`` [q]; ``hist_ts`` (when ``ts`` / ``input_ts`` is loaded); ``pos``
    [q]; ``neg`` [q] (chunks); ``row`` [q] global table row and ``t`` [q] position in it (the
    sample's identity); ``fill`` bool [q]."""

    shard: int
    hist: np.ndarray
    hist_len: np.ndarray
    hist_ts: np.ndarray | None
    pos: np.ndarray
    neg: np.ndarray | None
    row: np.ndarray
    t: np.ndarray
    fill: np.ndarray
    users: np.ndarray


def windows(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, kappa: int
) -> tuple[np.ndarray, np.ndarray]:
    """The last ``kappa`` entries of ``values[starts[b]:ends[b]]`` for every b, concatenated;
    returns (flat ids, lengths [B])."""
    lengths = np.minimum(ends - starts, kappa).astype(np.int64)
    first = ends - lengths
    idx = np.repeat(first - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    idx = idx + np.arange(int(lengths.sum()), dtype=np.int64)
    return values[idx], lengths


def check_row_ids(
    values: np.ndarray,
    upper: int,
    where: str,
    field: str,
    offsets: np.ndarray,
    rows0: np.ndarray,
) -> None:
    """Raise :class:`BundleFormatError` for the first id outside ``[0, upper)`` of a list column
    (values with ``offsets``, as :func:`distrec.data.bundle.check_ids`) over loaded rows whose
    local row k is table row ``rows0[k]``: the error names the table row, not the window's."""
    bad = np.flatnonzero((values < 0) | (values >= upper))
    if bad.size:
        row = int(rows0[np.searchsorted(offsets, bad[0], side="right") - 1])
        raise BundleFormatError(
            f"{where}: row {row}, field {field!r}: id {int(values[bad[0]])} outside [0, {upper})"
        )


class SeqStream(RankStream):
    """One rank's shards of a :class:`SeqPlan` and their per-step sample slices."""

    def __init__(
        self, plan: SeqPlan, rank: int, world: int, global_batch: int, seed: int, max_len: int
    ) -> None:
        super().__init__(plan, rank, world, global_batch, seed)  # type: ignore[arg-type]
        self.seq = plan
        self.max_len = max_len
        # global batch positions of each shard's samples: shard v holds [goff[v], goff[v] + q_v)
        self.goff = np.concatenate([[0], np.cumsum(self.quota)]).astype(np.int64)

    @property
    def global_positions(self) -> np.ndarray:
        """int64 [rank_batch]: where this rank's samples sit in the global batch (shard order)."""
        return np.concatenate(
            [np.arange(self.goff[v], self.goff[v + 1], dtype=np.int64) for v in self.shards]
            or [np.zeros(0, np.int64)]
        )

    def _load(self, frags: list[Fragment], perm_seed: list[int]) -> Window:
        plan = self.seq
        pieces = []
        for f in sorted(frags, key=lambda f: (getattr(f, "row0", 0), f.lo)):
            assert isinstance(f, SeqFragment)
            pieces.append((f.file, f.group, f.lo, f.hi, f.row0))
        users, rows0, cols, read = read_rows(
            plan.bundle, plan.table, plan.where, pieces, plan.columns
        )
        for c, (off, val) in cols.items():
            if c not in ("ts", "input_ts"):
                check_row_ids(val, plan.num_items, plan.where, c, off, rows0)
        lens = np.diff(cols[plan.columns[0]][0])
        if plan.kind == "windows":
            if plan.footer_only and np.any(lens == 0):
                bad = int(rows0[np.flatnonzero(lens == 0)[0]])
                raise BundleFormatError(
                    f"{plan.where}: row {bad}, field {plan.columns[0]!r}: empty sequence (the "
                    "streaming reader counts samples from footers: items - rows)"
                )
            per = np.maximum(lens - 1, 0)
            first = 1
        else:  # one sample per (chunk, j) with j below both the target and the negative count
            per = np.minimum(np.diff(cols["targets"][0]), np.diff(cols["candidates"][0]))
            first = 0
        row = np.repeat(np.arange(len(per), dtype=np.int64), per)
        pos = np.arange(int(per.sum()), dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)
        order = np.random.default_rng(perm_seed).permutation(row.shape[0])
        win = SeqWindow(
            users, {}, row[order].astype(np.int32), (pos[order] + first).astype(np.int32), read
        )
        win.cols, win.rows0 = cols, rows0
        return win

    def shard_slice(self, v: int, epoch: int, step: int) -> SeqSlice:  # type: ignore[override]
        """Shard v's samples of global step ``step`` of ``epoch`` (v must be an own shard)."""
        q = self.quota[v]
        se = self._epoch(v, epoch)
        n = int(se.starts[-1])
        if n == 0:
            raise SystemExit(
                f"{self.seq.where}: shard {v} of {self.plan.partitions} has no samples; use "
                "fewer data.partitions"
            )
        pos = np.arange(step * q, (step + 1) * q, dtype=np.int64)
        fill = pos >= n
        pos %= n
        w_of = np.searchsorted(se.starts, pos, side="right") - 1
        pieces = {}
        # a step crossing a window boundary reads both, in the order the step meets them: the
        # window it ends in stays cached for the next step (sorted order would reload both at
        # the wrap-around step, whose first samples are the last window's: 5 loads per shard
        # and epoch instead of 3 at 2 windows)
        ws, first = np.unique(w_of, return_index=True)
        for w in ws[np.argsort(first)]:
            m = np.flatnonzero(w_of == w)
            win = self._window(v, epoch, int(w))
            assert isinstance(win, SeqWindow)
            pieces[int(w)] = self._features(v, win, pos[m] - se.starts[w], fill[m])
        # (pieces in window order: deterministic and W-independent, which is all a step needs)
        parts = [pieces[w] for w in sorted(pieces)]
        return parts[0] if len(parts) == 1 else _concat(parts)

    def _features(self, v: int, win: SeqWindow, off: np.ndarray, fill: np.ndarray) -> SeqSlice:
        plan, k = self.seq, self.max_len
        r = win.local[off].astype(np.int64)
        t = win.items[off].astype(np.int64)
        hist_col = plan.columns[0]
        h_off, h_val = win.cols[hist_col]
        if plan.kind == "windows":
            starts, ends = h_off[r], h_off[r] + t
            pos = h_val[h_off[r] + t]
            neg = None
            ts_col = "ts"
        else:
            starts, ends = h_off[r], h_off[r + 1]
            t_off, t_val = win.cols["targets"]
            c_off, c_val = win.cols["candidates"]
            pos, neg = t_val[t_off[r] + t], c_val[c_off[r] + t]
            ts_col = "input_ts"
        hist, hist_len = windows(h_val, starts, ends, k)
        hist_ts = None
        if ts_col in win.cols:
            hist_ts = windows(win.cols[ts_col][1], starts, ends, k)[0]
        return SeqSlice(v, hist, hist_len, hist_ts, pos, neg, win.rows0[r], t, fill, win.users[r])

    def step_slices(self, epoch: int, step: int) -> list[SeqSlice]:  # type: ignore[override]
        return [self.shard_slice(v, epoch, step) for v in self.shards]


def _concat(parts: list[SeqSlice]) -> SeqSlice:
    """One shard step's pieces from several windows, concatenated."""

    def cat(xs: list[np.ndarray | None]) -> np.ndarray | None:
        return None if xs[0] is None else np.concatenate(xs)  # type: ignore[arg-type]

    f = {
        k: cat([getattr(p, k) for p in parts])
        for k in ("hist", "hist_len", "hist_ts", "pos", "neg", "row", "t", "fill", "users")
    }
    return SeqSlice(parts[0].shard, **f)  # type: ignore[arg-type]


class EvalShare:
    """Rank ``rank``'s share of an eval table, laid out like training: P eval shards
    (:func:`deal_rows`, W-independent), shard v run by rank v % W; global eval step t takes rows
    [t q_v, (t + 1) q_v) of every shard's evaluated rows (q_v = E // P, + 1 for v < E % P, at
    least 1), so a global step is the same set of queries at any W with P % W == 0 and rank r
    reads only its shards' row groups. The step count is the largest shard's, from footers (and
    the seeded ``eval.max_users`` sample), the same on every rank.

    ``cols`` / ``users`` / ``row0s``: the rank's rows (read once; local row k is global row
    ``row0s[k]``); :meth:`step_rows` the local rows of a step.
    """

    def __init__(
        self,
        bundle: Bundle,
        table: str,
        split: str,
        columns: list[str],
        rank: int,
        world: int,
        eval_batch: int,
        max_users: int = 0,
        seed: int = 0,
        partitions: int = 0,
    ) -> None:
        self.where = str(bundle.table_dir(table)) + f"/split={split}"
        groups = footer_groups(bundle, table, split)
        self.total = sum(g.rows for g in groups)
        keep = eval_sample(self.total, max_users, seed, split)  # global, W-independent
        p = bundle_partitions(bundle, partitions, eval_batch)
        shards = deal_rows(groups, p)
        own = [v for v in range(p) if v % world == rank] if p % world == 0 else []
        if p % world:  # evaluation at a world size that does not divide P: one shard per rank
            shards = deal_rows(groups, world)
            p, own = world, [rank]
        self.partitions = p
        quota = [max(1, eval_batch // p + (v < eval_batch % p)) for v in range(p)]
        shard_rows = []
        for v in range(p):
            rows = np.concatenate(
                [g.row0 + np.arange(lo, hi) for g, lo, hi in shards[v]] or [np.zeros(0, np.int64)]
            ).astype(np.int64)
            shard_rows.append(rows if keep is None else rows[np.isin(rows, keep)])
        self.steps = max(
            (-(-len(r) // q) for r, q in zip(shard_rows, quota, strict=True)), default=0
        )
        pieces = [(g.file, g.index, lo, hi, g.row0 + lo) for v in own for g, lo, hi in shards[v]]
        self.users, self.row0s, self.cols, _ = read_rows(bundle, table, self.where, pieces, columns)
        self._own = [(np.searchsorted(self.row0s, shard_rows[v]), quota[v]) for v in own]

    def num_steps(self) -> int:
        return self.steps

    def step_rows(self, step: int) -> np.ndarray:
        """Local rows (into ``cols`` / ``users``) of this rank's queries of eval step ``step``."""
        parts = [loc[step * q : (step + 1) * q] for loc, q in self._own]
        return np.concatenate(parts or [np.zeros(0, np.int64)]).astype(np.int64)


def deal_rows(groups: list[GroupInfo], p: int) -> list[list[tuple[GroupInfo, int, int]]]:
    """Rows of each of ``p`` shards as (row group, lo, hi) pieces: whole row groups j with
    j * p // n_groups == v when there are at least p groups, else the row range
    [v R / p, (v + 1) R / p) of the table (a one-group / format-1 table; reading a piece reads
    its whole row group)."""
    out: list[list[tuple[GroupInfo, int, int]]] = [[] for _ in range(p)]
    if len(groups) >= p:
        for j, g in enumerate(groups):
            out[j * p // len(groups)].append((g, 0, g.rows))
        return out
    r = sum(g.rows for g in groups)
    for v in range(p):
        for g in groups:
            lo = max(v * r // p, g.row0) - g.row0
            hi = min((v + 1) * r // p, g.row0 + g.rows) - g.row0
            if hi > lo:
                out[v].append((g, lo, hi))
    return out
