"""``list_column`` / ``check_ids``: list columns of bundle tables as CSR arrays, with errors that
name the file, row and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle, check_ids, list_column
from distrec.data.schema import SEQUENCES, BundleFormatError
from tests.helpers.bundles import write_tiny_bundle


def test_offsets_values_nulls_and_slices() -> None:
    t = pa.table({"xs": pa.array([[1, 2], None, [], [3, 4, 5]], pa.list_(pa.int64()))})
    off, val = list_column(t, "xs", "t")
    assert off.tolist() == [0, 2, 2, 2, 5] and val.tolist() == [1, 2, 3, 4, 5]
    assert off.dtype == np.int64 and val.dtype == np.int64
    # a slice starts at a non-zero offset: offsets are rebased, values cut to the slice
    off, val = list_column(t.slice(3, 1), "xs", "t", np.float32)
    assert off.tolist() == [0, 3] and val.tolist() == [3.0, 4.0, 5.0]
    assert val.dtype == np.float32


def test_missing_or_non_list_field_names_where_and_field() -> None:
    t = pa.table({"xs": [1, 2]})
    with pytest.raises(BundleFormatError, match=r"^here: field 'ys' is missing"):
        list_column(t, "ys", "here")
    with pytest.raises(BundleFormatError, match=r"^here: field 'xs' must be a list"):
        list_column(t, "xs", "here")


def test_check_ids_names_the_row_of_the_first_bad_id() -> None:
    off = np.array([0, 2, 2, 5])
    check_ids(np.array([0, 1, 2, 3, 4]), 5, "f", "items", off)
    with pytest.raises(BundleFormatError, match=r"^f: row 2, field 'items': id 7 outside \[0, 5\)"):
        check_ids(np.array([0, 1, 2, 7, -1]), 5, "f", "items", off)
    with pytest.raises(BundleFormatError, match=r"row 0, field 'items': id -1"):
        check_ids(np.array([-1]), 5, "f", "items", np.array([0, 1]))


def test_reads_a_bundle_sequence_table(tmp_path: Path) -> None:
    b = Bundle(write_tiny_bundle(tmp_path / "b", users=12, items=10))
    t = b.table("sequences", ["user", "items"])
    off, items = list_column(t, "items", b.table_dir("sequences"))
    assert len(off) == t.num_rows + 1
    assert [items[off[r] : off[r + 1]].tolist() for r in range(t.num_rows)] == t.column(
        "items"
    ).to_pylist()
    check_ids(items, b.manifest.num_items, b.table_dir("sequences"), "items", off)
    # a bad id written into the table is reported with the table's directory and row
    bad = pa.table({"user": [0, 1], "items": [[1], [2, 99]], "ts": [[0], [0, 1]]}, schema=SEQUENCES)
    for f in b.table_dir("sequences").glob("*.parquet"):
        f.unlink()
    pq.write_table(bad, b.table_dir("sequences") / "part-0.parquet")
    t = b.table("sequences", ["items"])
    off, items = list_column(t, "items", b.table_dir("sequences"))
    with pytest.raises(BundleFormatError, match=r"sequences: row 1, field 'items': id 99"):
        check_ids(items, b.manifest.num_items, b.table_dir("sequences"), "items", off)
