"""Small pyarrow readers for the bundle tables the sequence models need.

These read the layout of :mod:`distrec.data.schema` directly (a directory of Parquet files per
table) so that the sequence adapter does not depend on the reader's internals; they validate what
they read and name the file and field on bad input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from distrec.data.schema import BundleFormatError


@dataclass
class CsrGraph:
    """Row-compressed weighted adjacency: row ``v``'s neighbours are
    ``indices[indptr[v]:indptr[v+1]]`` with ``weights`` of the same slice.

    indptr: int64[num_src + 1]; indices: int64[nnz]; weights: float32[nnz].
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    num_src: int
    num_dst: int

    def row(self, v: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[v], self.indptr[v + 1]
        return self.indices[lo:hi], self.weights[lo:hi]


def read_table(bundle_dir: str, rel: str, columns: list[str] | None = None) -> pa.Table:
    """Read one bundle table directory (``rel`` like ``sequences`` or
    ``eval/user_holdout/split=valid``). Raises BundleFormatError naming the path when absent."""
    path = os.path.join(bundle_dir, rel)
    if not os.path.isdir(path):
        raise BundleFormatError(f"{path}: table {rel!r} is missing from the bundle")
    dataset = ds.dataset(path, format="parquet", partitioning=None)
    try:
        return dataset.to_table(columns=columns)
    except (pa.ArrowInvalid, KeyError) as e:
        raise BundleFormatError(f"{path}: cannot read columns {columns}: {e}") from e


def list_column(
    table: pa.Table, name: str, where: str, dtype: type = np.int64
) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (offsets int64[rows+1], values ``dtype``[nnz]); nulls -> empty."""
    if name not in table.column_names:
        raise BundleFormatError(f"{where}: field {name!r} is missing (has {table.column_names})")
    col = table.column(name).combine_chunks()
    if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
        raise BundleFormatError(f"{where}: field {name!r} must be a list, got {col.type}")
    col = col.fill_null(pa.scalar([], type=col.type)) if col.null_count else col
    offsets = np.asarray(col.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=dtype)
    # Sliced arrays carry a non-zero first offset.
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def check_ids(values: np.ndarray, upper: int, where: str, field: str, offsets: np.ndarray) -> None:
    """Fail with the row number of the first id outside ``[0, upper)``."""
    bad = np.flatnonzero((values < 0) | (values >= upper))
    if bad.size:
        row = int(np.searchsorted(offsets, bad[0], side="right") - 1) if offsets.size else bad[0]
        raise BundleFormatError(
            f"{where}: row {row}, field {field!r}: id {int(values[bad[0]])} outside [0, {upper})"
        )


def read_graph(bundle_dir: str, name: str, num_src: int, num_dst: int) -> CsrGraph:
    """Read ``graphs/<name>`` (one row per source: src, dst list, w list) into a CsrGraph with
    ``num_src`` rows; sources without a row get an empty neighbour list."""
    rel = f"graphs/{name}"
    where = os.path.join(bundle_dir, rel)
    table = read_table(bundle_dir, rel, ["src", "dst", "w"])
    src = np.asarray(table.column("src").to_numpy(), dtype=np.int64)
    d_off, dst = list_column(table, "dst", where)
    w_off, w = list_column(table, "w", where, np.float32)
    if not np.array_equal(d_off, w_off):
        row = int(np.flatnonzero(np.diff(d_off) != np.diff(w_off))[0])
        raise BundleFormatError(f"{where}: row {row}: fields 'dst' and 'w' differ in length")
    if src.size and (src.min() < 0 or src.max() >= num_src):
        row = int(np.flatnonzero((src < 0) | (src >= num_src))[0])
        raise BundleFormatError(
            f"{where}: row {row}, field 'src': {src[row]} outside [0, {num_src})"
        )
    check_ids(dst, num_dst, where, "dst", d_off)
    if not np.all(np.isfinite(w)) or (w < 0).any():
        row = int(
            np.searchsorted(w_off, np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0], "right") - 1
        )
        raise BundleFormatError(f"{where}: row {row}, field 'w': weights must be finite and >= 0")
    order = np.argsort(src, kind="stable")
    lengths = np.diff(d_off)[order]
    counts = np.zeros(num_src, dtype=np.int64)
    np.add.at(counts, src[order], lengths)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # Gather each source's slice in src order.
    starts = d_off[:-1][order]
    idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    idx = idx + np.arange(int(lengths.sum()), dtype=np.int64)
    return CsrGraph(
        indptr=indptr,
        indices=dst[idx],
        weights=np.asarray(w, dtype=np.float32)[idx],
        num_src=num_src,
        num_dst=num_dst,
    )
