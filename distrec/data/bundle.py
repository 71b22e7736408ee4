"""Reader of a dataset bundle (the layout is in :mod:`distrec.data.schema`). Torch-free.

A bundle is a local directory or a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``; see
:mod:`distrec.data.fs`). Graph tables are partitioned by src range: :meth:`Bundle.graph_rows` reads
only the row groups whose src statistics meet ``[lo, hi)``; :meth:`Bundle.split_rows` reads the
rows of a split table (the held-out splits are range-partitioned by user / group, sorted) with a
key in ``[lo, hi)`` the same way. :meth:`Bundle.row_groups` lists a table's row groups from the
Parquet footers alone (what the streaming reader deals out to ranks).

Example::

    b = Bundle("data/demo/bundle")        # or Bundle("s3://bucket/demo/bundle")
    b.manifest.num_items                      # table sizes always come from the manifest
    train = b.interactions("train", "buy")    # {"user": int64[E], "item": ..., "behavior": ..., "ts": ...}
    ui = b.graph("ui.buy")                    # Csr users x items, symmetric-normalised weights
    b.raw_ids("items")[ui.indices[:5]]        # back to the raw ids of the input logs
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from distrec.data import fs as bfs
from distrec.data.csr import Csr
from distrec.data.schema import (
    GRAPH,
    GRAPH_GROUP_ITEM,
    GRAPH_GROUP_USER,
    GRAPH_ITEM_COOC,
    GRAPH_USER_GROUP,
    MANIFEST_FILE,
    BundleFormatError,
    Manifest,
    schema_for,
)

_ID_KINDS = ("users", "items", "groups")


def graph_shape(name: str, manifest: Manifest) -> tuple[int, int]:
    """(num_src, num_dst) of a bundle graph, from its name and the manifest counts."""
    u, i, g = manifest.num_users, manifest.num_items, manifest.num_groups
    fixed = {
        GRAPH_ITEM_COOC: (i, i),
        GRAPH_USER_GROUP: (u, g),
        GRAPH_GROUP_USER: (g, u),
        GRAPH_GROUP_ITEM: (g, i),
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("ui."):
        return (u, i)
    if name.startswith("iu."):
        return (i, u)
    raise BundleFormatError(f"unknown graph name {name!r} (ui.<b>, iu.<b>, {', '.join(fixed)})")


class Bundle:
    """A validated, read-only view of one bundle directory.

    Tables are read with ``pyarrow.dataset`` (Spark's ``_SUCCESS`` / ``.crc`` files are ignored)
    and cast to the schema of :mod:`distrec.data.schema`; a missing column or an uncastable type
    is a :class:`BundleFormatError` naming the file and the field.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.uri = os.fspath(path)
        self.fs, self.root = bfs.open_bundle_fs(self.uri)
        self.path = Path(self.root)  # the path inside ``fs`` (messages name it)
        where = bfs.redact(self.uri)
        if not bfs.is_dir(self.fs, self.root):
            raise BundleFormatError(f"{where}: bundle directory does not exist")
        text = bfs.read_text(self.fs, f"{self.root}/{MANIFEST_FILE}")
        if text is None:
            raise BundleFormatError(
                f"{where}: no {MANIFEST_FILE}; not a dataset bundle (build one with "
                "`python -m spark_jobs.build_bundle`)"
            )
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise BundleFormatError(f"{where}/{MANIFEST_FILE}: not valid JSON: {e}") from e
        self.manifest = Manifest.from_dict(d, where=f"{where}/{MANIFEST_FILE}")
        self._graphs: dict[str, Csr] = {}
        self._row_groups: dict[str, list[RowGroup]] = {}
        self.rows_read: dict[str, int] = {}  # table -> rows read so far (tests count them)
        # table -> rows of the row groups decoded (before a filter): what a read cost
        self.rows_scanned: dict[str, int] = {}

    # ------------------------------------------------------------------ tables
    def table_dir(self, name: str) -> Path:
        """Directory of table ``name`` (the manifest's path when it lists the table)."""
        info = self.manifest.tables.get(name)
        return self.path / (info.path if info is not None else name)

    def has_table(self, name: str, split: str | None = None) -> bool:
        d = self.table_dir(name)
        if split is not None:
            d = d / f"split={split}"
        return bool(bfs.data_files(self.fs, str(d)))

    def files(self, name: str, split: str | None = None) -> list[str]:
        """Data files of table ``name`` (one ``split=`` partition), in the manifest's index order
        when the manifest lists them (format 2 bundles), else sorted by path."""
        d = self.table_dir(name)
        if split is not None:
            d = d / f"split={split}"
        info = self.manifest.tables.get(name)
        listed = getattr(info, "files", None) if info is not None else None
        if listed:
            base = self.table_dir(name)
            entries = [e for e in listed if split is None or e.get("split") in (None, split)]
            return [str(base / e["path"]) for e in entries]
        return bfs.data_files(self.fs, str(d))

    def table(
        self, name: str, columns: list[str] | None = None, split: str | None = None
    ) -> pa.Table:
        """Read table ``name`` (e.g. ``"interactions"``, ``"graphs/ui.buy"``, ``"eval/loo"``),
        optionally one ``split=`` partition, cast to the bundle schema."""
        d = self.table_dir(name)
        if split is not None:
            d = d / f"split={split}"
        if not bfs.is_dir(self.fs, str(d)):
            raise BundleFormatError(
                f"{d}: table {name!r}"
                + (f" split {split!r}" if split else "")
                + " is missing from the bundle"
            )
        schema = schema_for(name)
        wanted = columns if columns is not None else schema.names
        unknown = [c for c in wanted if c not in schema.names]
        if unknown:
            raise KeyError(f"table {name!r} has no column(s) {unknown}; columns: {schema.names}")
        files = bfs.data_files(self.fs, str(d))
        if not files:
            return schema.empty_table().select(wanted)
        parts = [self._read_file(name, f, wanted) for f in files]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def _read_file(
        self,
        name: str,
        f: str,
        columns: list[str],
        where: ds.Expression | None = None,
        row_groups: list[int] | None = None,
    ) -> pa.Table:
        """One data file of table ``name`` (optionally some row groups, optionally filtered), cast
        to the bundle schema; an error names the file and the field."""
        schema = schema_for(name)
        fragment = ds.ParquetFileFormat().make_fragment(f, filesystem=self.fs)
        have = fragment.physical_schema.names
        missing = [c for c in columns if c not in have]
        if missing:
            raise BundleFormatError(f"{f}: table {name!r} lacks field(s) {missing} (has {have})")
        if row_groups is not None:
            fragment = fragment.subset(row_group_ids=row_groups)
        t = fragment.to_table(columns=columns, filter=where)
        self.rows_read[name] = self.rows_read.get(name, 0) + t.num_rows
        scanned = sum(rg.num_rows for rg in fragment.row_groups)
        self.rows_scanned[name] = self.rows_scanned.get(name, 0) + scanned
        return _cast(t, schema, Path(f))

    # ------------------------------------------------------------- row groups
    def row_groups(self, name: str, split: str | None = None, key: str = "src") -> list[RowGroup]:
        """Row groups of table ``name`` from the Parquet footers only (no data read): file, index,
        rows, list values of the first list column (edges of a graph, items of a sequence) and
        the min / max statistics of column ``key`` (``src`` of a graph; ``user`` / ``group`` of
        a split table). Cached."""
        cache = f"{name}|{split}|{key}"
        if cache not in self._row_groups:
            out = []
            for f in self.files(name, split):
                with self.fs.open_input_file(f) as fh:
                    md = pq.ParquetFile(fh).metadata
                out.extend(_footer_row_groups(f, md, key))
            self._row_groups[cache] = out
        return self._row_groups[cache]

    def _rows_in_range(
        self,
        table: str,
        split: str | None,
        key: str,
        lo: int,
        hi: int,
        columns: list[str],
        where: ds.Expression | None = None,
    ) -> list[pa.Table]:
        """Rows of ``table`` (one split) with ``key`` in ``[lo, hi)`` (and ``where``), one table
        per file read: only the row groups whose ``key`` statistics meet the range are decoded,
        so a table partitioned and sorted by ``key`` costs about its rows in range. A row group
        without statistics (or an unsorted table) is read and filtered: right, only slower."""
        by_file: dict[str, list[int]] = {}
        for g in self.row_groups(table, split, key):
            if g.src_min is None or (g.src_max >= lo and g.src_min < hi):  # type: ignore[operator]
                by_file.setdefault(g.file, []).append(g.index)
        cond = (ds.field(key) >= lo) & (ds.field(key) < hi)
        cond = cond if where is None else cond & where
        return [self._read_file(table, f, columns, cond, rgs) for f, rgs in by_file.items()]

    def split_rows(
        self,
        table: str,
        split: str,
        key: str,
        lo: int,
        hi: int,
        columns: list[str] | None = None,
        behavior: str | None = None,
    ) -> pa.Table:
        """Rows of ``table`` (``"interactions"``, ``"groups/items"``) in ``split=<split>`` with
        ``key`` (``"user"``, ``"group"``) in ``[lo, hi)``, optionally of one ``behavior`` (a
        name), cast to the bundle schema; columns default to all of the table's. Reads only the
        row groups whose footer statistics meet the range (the Spark job writes the held-out
        splits range-partitioned by ``key`` and sorted: a rank reads about its own rows)."""
        schema = schema_for(table)
        cols = list(columns) if columns is not None else schema.names
        where = None
        if behavior is not None:
            where = ds.field("behavior") == self.behavior_index(behavior)
            cols = cols if "behavior" in cols else [*cols, "behavior"]
        if not self.has_table(table, split):
            return schema.empty_table().select(cols)
        parts = self._rows_in_range(table, split, key, lo, hi, cols, where)
        return pa.concat_tables(parts) if parts else schema.empty_table().select(cols)

    def graph_rows(self, name: str, lo: int, hi: int, weights: bool = True) -> GraphRows:
        """Rows of graph ``name`` with src in ``[lo, hi)``, reading only the row groups whose src
        statistics meet the range (a graph is partitioned and sorted by src range).

        Returns :class:`GraphRows`: ``src`` int64 [n] (ascending), ``indptr`` int64 [n + 1],
        ``dst`` int64 [E], ``w`` float32 [E] (empty with ``weights=False``: not read); neighbours
        of each row sorted by dst.
        """
        num_src, num_dst = graph_shape(name, self.manifest)
        lo, hi = max(0, lo), min(hi, num_src)
        table = f"graphs/{name}"
        cols = ["src", "dst", "w"] if weights else ["src", "dst"]
        parts = self._rows_in_range(table, None, "src", lo, hi, cols)
        t = pa.concat_tables(parts) if parts else GRAPH.empty_table().select(cols)
        return _graph_rows(t, str(self.table_dir(table)), num_src, num_dst)

    # ------------------------------------------------------------ conveniences
    def behavior_index(self, behavior: str) -> int:
        try:
            return self.manifest.behaviors.index(behavior)
        except ValueError:
            raise KeyError(
                f"behavior {behavior!r} is not in this bundle; behaviors: {self.manifest.behaviors}"
            ) from None

    def interactions(self, split: str, behavior: str | None = None) -> dict[str, np.ndarray]:
        """Columns of ``interactions/split=<split>`` as numpy arrays [E]: ``user``, ``item`` (int64),
        ``behavior`` (int8 index into ``manifest.behaviors``), ``ts`` (int64, -1 where null).
        ``behavior`` (a name) keeps only that behavior's rows."""
        t = self.table("interactions", split=split)
        if behavior is not None:
            t = t.filter(
                pc.equal(t["behavior"], pa.scalar(self.behavior_index(behavior), pa.int8()))
            )
        out = {c: t[c].to_numpy() for c in ("user", "item", "behavior")}
        out["ts"] = pc.fill_null(t["ts"], -1).to_numpy()
        n_u, n_i = self.manifest.num_users, self.manifest.num_items
        for col, n in (("user", n_u), ("item", n_i)):
            a = out[col]
            if a.size and (a.min() < 0 or a.max() >= n):
                bad = int(np.flatnonzero((a < 0) | (a >= n))[0])
                raise BundleFormatError(
                    f"{self.table_dir('interactions')}/split={split}: row {bad} field {col}: "
                    f"{a[bad]} is outside [0, {n}) (counts.{col}s in the manifest)"
                )
        return out

    def graph(self, name: str) -> Csr:
        """Adjacency ``graphs/<name>`` as a :class:`Csr` (cached). Rows absent from the table are
        nodes without neighbours."""
        if name not in self._graphs:
            self._graphs[name] = self._read_graph(name)
        return self._graphs[name]

    def _read_graph(self, name: str) -> Csr:
        num_src, num_dst = graph_shape(name, self.manifest)
        g = _graph_rows(
            self.table(f"graphs/{name}"), str(self.table_dir(f"graphs/{name}")), num_src, num_dst
        )
        lens = np.diff(g.indptr)
        return Csr.from_pairs(np.repeat(g.src, lens), g.dst, num_src, num_dst, g.w, dedup=False)

    def raw_ids(self, kind: str) -> np.ndarray:
        """Raw string ids indexed by idx: ``raw_ids("items")[i]`` is item i's id in the input logs."""
        if kind not in _ID_KINDS:
            raise KeyError(f"id kind {kind!r}; valid: {_ID_KINDS}")
        t = self.table(f"ids/{kind}")
        idx = t["idx"].to_numpy()
        n = int(self.manifest.counts.get(kind, 0))
        if idx.size != n or (n and not np.array_equal(np.sort(idx), np.arange(n))):
            raise BundleFormatError(
                f"{self.table_dir('ids/' + kind)}: field idx must be 0..{n - 1} exactly once "
                f"(counts.{kind} = {n}), got {idx.size} rows"
            )
        out = np.empty(n, dtype=object)
        out[idx] = np.asarray(t["raw_id"].to_pylist(), dtype=object)
        return out

    def eval_rows(self, protocol: str, split: str) -> pa.Table:
        """``eval/<protocol>/split=<split>``: user, input, input_ts, targets, candidates."""
        return self.table(f"eval/{protocol}", split=split)

    def __repr__(self) -> str:
        m = self.manifest
        return f"Bundle({bfs.redact(self.uri)!r}, users={m.num_users}, items={m.num_items}, behaviors={m.behaviors})"


def list_column(
    table: pa.Table, name: str, where: str | os.PathLike[str], dtype: type = np.int64
) -> tuple[np.ndarray, np.ndarray]:
    """List column ``name`` of ``table`` as CSR arrays: (offsets int64 [rows + 1], values
    ``dtype`` [nnz]); row ``r`` is ``values[offsets[r]:offsets[r + 1]]``, a null list is empty.
    ``where`` (the table's directory) names the file in errors.

    Example::

        off, items = list_column(b.table("sequences", ["items"]), "items", b.table_dir("sequences"))
    """
    if name not in table.column_names:
        raise BundleFormatError(f"{where}: field {name!r} is missing (has {table.column_names})")
    col = table.column(name).combine_chunks()
    if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
        raise BundleFormatError(f"{where}: field {name!r} must be a list, got {col.type}")
    if col.null_count:
        col = col.fill_null(pa.scalar([], type=col.type))
    offsets = np.asarray(col.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values: np.ndarray = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=dtype)
    # A sliced array carries a non-zero first offset and values outside the slice.
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def check_ids(
    values: np.ndarray,
    upper: int,
    where: str | os.PathLike[str],
    field: str,
    offsets: np.ndarray,
) -> None:
    """Raise :class:`BundleFormatError` naming the row of the first id of a list column (values
    [nnz] with ``offsets`` [rows + 1], as from :func:`list_column`) outside ``[0, upper)``."""
    bad = np.flatnonzero((values < 0) | (values >= upper))
    if bad.size:
        row = int(np.searchsorted(offsets, bad[0], side="right") - 1)
        raise BundleFormatError(
            f"{where}: row {row}, field {field!r}: id {int(values[bad[0]])} outside [0, {upper})"
        )


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group, described from its file's footer alone."""

    file: str
    index: int
    rows: int
    values: int  # entries of the first list column (graph edges, sequence items); 0 if none
    src_min: int | None = None  # statistics of the key column (src of a graph; see row_groups)
    src_max: int | None = None


def _footer_row_groups(f: str, md: pq.FileMetaData, key: str = "src") -> list[RowGroup]:
    names = [md.schema.column(j).path for j in range(md.num_columns)]
    src_col = names.index(key) if key in names else None
    list_col = next((j for j, n in enumerate(names) if n.endswith(".element")), None)
    out = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        values = 0
        if list_col is not None:
            c = rg.column(list_col)
            # one definition level per empty or null list: not an entry
            nulls = c.statistics.null_count if c.statistics is not None else 0
            values = int(c.num_values) - int(nulls or 0)
        lo = hi = None
        if src_col is not None:
            st = rg.column(src_col).statistics
            if st is not None and st.has_min_max:
                lo, hi = int(st.min), int(st.max)
        out.append(RowGroup(f, i, int(rg.num_rows), values, lo, hi))
    return out


@dataclass
class GraphRows:
    """Some rows of a graph: ``src`` int64 [n] ascending, ``indptr`` int64 [n + 1], ``dst`` int64
    [E] sorted within each row, ``w`` float32 [E]."""

    src: np.ndarray
    indptr: np.ndarray
    dst: np.ndarray
    w: np.ndarray

    def local(self, num_dst: int) -> Csr:
        """The rows as a :class:`Csr` over local row ids 0..n-1 (row k is node ``src[k]``)."""
        return Csr(self.indptr, self.dst, self.w, int(self.src.shape[0]), num_dst)


def _graph_rows(t: pa.Table, where: str, num_src: int, num_dst: int) -> GraphRows:
    """Validate a graph table and turn it into :class:`GraphRows` (rows sorted by src)."""
    src = t["src"].to_numpy()
    if src.size and (src.min() < 0 or src.max() >= num_src):
        bad = int(np.flatnonzero((src < 0) | (src >= num_src))[0])
        raise BundleFormatError(f"{where}: row {bad} field src: {src[bad]} outside [0, {num_src})")
    order = np.argsort(src, kind="stable")
    if src.size > 1 and np.any(src[order][1:] == src[order][:-1]):
        raise BundleFormatError(f"{where}: field src has duplicate rows (one row per source node)")
    dst_lens = pc.list_value_length(t["dst"]).fill_null(0).to_numpy()
    has_w = "w" in t.column_names
    w_lens = pc.list_value_length(t["w"]).fill_null(0).to_numpy() if has_w else dst_lens
    if not np.array_equal(dst_lens, w_lens):
        bad = int(np.flatnonzero(dst_lens != w_lens)[0])
        raise BundleFormatError(f"{where}: row {bad} (src {src[bad]}): dst and w differ in length")
    dst = pc.list_flatten(t["dst"]).to_numpy().astype(np.int64, copy=False)
    w = (
        pc.list_flatten(t["w"]).to_numpy().astype(np.float32, copy=False)
        if has_w
        else np.zeros(0, np.float32)
    )
    if dst.size and (dst.min() < 0 or dst.max() >= num_dst):
        bad_edge = int(np.flatnonzero((dst < 0) | (dst >= num_dst))[0])
        row = int(np.searchsorted(np.cumsum(dst_lens), bad_edge, side="right"))
        raise BundleFormatError(
            f"{where}: row {row} (src {src[row]}) field dst: {dst[bad_edge]} outside [0, {num_dst})"
        )
    starts = np.concatenate([[0], np.cumsum(dst_lens)]).astype(np.int64)
    if not np.array_equal(order, np.arange(src.size)):  # files may come in any order: sort rows
        lens = dst_lens[order]
        take = np.repeat(starts[order], lens) + (
            np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        )
        src, dst_lens, dst = src[order], lens, dst[take]
        w = w[take] if has_w else w
        starts = np.concatenate([[0], np.cumsum(dst_lens)]).astype(np.int64)
    # neighbours sorted within each row (Csr.contains needs it); Spark's and our writers sort,
    # so check cheaply first
    down = np.flatnonzero(dst[1:] < dst[:-1]) + 1
    if np.isin(down, starts, invert=True).any():
        row_of = np.repeat(np.arange(src.size), dst_lens)
        sort = np.lexsort((dst, row_of))
        dst = dst[sort]
        w = w[sort] if has_w else w
    return GraphRows(src.astype(np.int64, copy=False), starts, dst, w)


def _cast(t: pa.Table, schema: pa.Schema, where: Path) -> pa.Table:
    """Cast columns to the bundle schema (Spark may write int32 or large lists)."""
    cols = []
    for name in t.column_names:
        want = schema.field(name).type
        col = t[name]
        if col.type != want:
            try:
                col = col.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise BundleFormatError(
                    f"{where}: field {name} has type {col.type}, expected {want}: {e}"
                ) from e
        cols.append(col)
    return pa.table(cols, names=t.column_names)
