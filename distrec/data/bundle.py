"""Reader of a dataset bundle (the layout is in :mod:`distrec.data.schema`). Torch-free.

Example::

    b = Bundle("data/demo/bundle")
    b.manifest.num_items                      # table sizes always come from the manifest
    train = b.interactions("train", "buy")    # {"user": int64[E], "item": ..., "behavior": ..., "ts": ...}
    ui = b.graph("ui.buy")                    # Csr users x items, symmetric-normalised weights
    b.raw_ids("items")[ui.indices[:5]]        # back to the raw ids of the input logs
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from distrec.data.csr import Csr
from distrec.data.schema import (
    GRAPH_GROUP_ITEM,
    GRAPH_GROUP_USER,
    GRAPH_ITEM_COOC,
    GRAPH_USER_GROUP,
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
        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleFormatError(f"{self.path}: bundle directory does not exist")
        self.manifest = Manifest.load(str(self.path))
        self._graphs: dict[str, Csr] = {}

    # ------------------------------------------------------------------ tables
    def table_dir(self, name: str) -> Path:
        """Directory of table ``name`` (the manifest's path when it lists the table)."""
        info = self.manifest.tables.get(name)
        return self.path / (info.path if info is not None else name)

    def has_table(self, name: str, split: str | None = None) -> bool:
        d = self.table_dir(name)
        if split is not None:
            d = d / f"split={split}"
        return d.is_dir() and any(_data_files(d))

    def table(
        self, name: str, columns: list[str] | None = None, split: str | None = None
    ) -> pa.Table:
        """Read table ``name`` (e.g. ``"interactions"``, ``"graphs/ui.buy"``, ``"eval/loo"``),
        optionally one ``split=`` partition, cast to the bundle schema."""
        d = self.table_dir(name)
        if split is not None:
            d = d / f"split={split}"
        if not d.is_dir():
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
        files = sorted(_data_files(d))
        if not files:
            return schema.empty_table().select(wanted)
        parts = []
        for f in files:  # file by file so that an error names the file
            dataset = ds.dataset(str(f), format="parquet")
            have = dataset.schema.names
            missing = [c for c in wanted if c not in have]
            if missing:
                raise BundleFormatError(
                    f"{f}: table {name!r} lacks field(s) {missing} (has {have})"
                )
            t = dataset.to_table(columns=wanted)
            parts.append(_cast(t, schema, f))
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

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
        where = self.table_dir(f"graphs/{name}")
        t = self.table(f"graphs/{name}")
        src = t["src"].to_numpy()
        if src.size and (src.min() < 0 or src.max() >= num_src):
            bad = int(np.flatnonzero((src < 0) | (src >= num_src))[0])
            raise BundleFormatError(
                f"{where}: row {bad} field src: {src[bad]} outside [0, {num_src})"
            )
        if np.unique(src).size != src.size:
            raise BundleFormatError(
                f"{where}: field src has duplicate rows (one row per source node)"
            )
        dst_lens = pc.list_value_length(t["dst"]).fill_null(0).to_numpy()
        w_lens = pc.list_value_length(t["w"]).fill_null(0).to_numpy()
        if not np.array_equal(dst_lens, w_lens):
            bad = int(np.flatnonzero(dst_lens != w_lens)[0])
            raise BundleFormatError(
                f"{where}: row {bad} (src {src[bad]}): dst and w differ in length"
            )
        dst = pc.list_flatten(t["dst"]).to_numpy().astype(np.int64, copy=False)
        w = pc.list_flatten(t["w"]).to_numpy().astype(np.float32, copy=False)
        if dst.size and (dst.min() < 0 or dst.max() >= num_dst):
            bad_edge = int(np.flatnonzero((dst < 0) | (dst >= num_dst))[0])
            row = int(np.searchsorted(np.cumsum(dst_lens), bad_edge, side="right"))
            raise BundleFormatError(
                f"{where}: row {row} (src {src[row]}) field dst: {dst[bad_edge]} outside [0, {num_dst})"
            )
        return Csr.from_pairs(np.repeat(src, dst_lens), dst, num_src, num_dst, w, dedup=False)

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
        return f"Bundle({str(self.path)!r}, users={m.num_users}, items={m.num_items}, behaviors={m.behaviors})"


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


def _data_files(d: Path) -> list[Path]:
    """Parquet files under ``d`` (recursive), skipping Spark's ``_SUCCESS``/``.crc`` markers."""
    return [
        p
        for p in d.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(d).parts)
        and p.suffix not in (".crc", ".json", ".tmp")
    ]


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
