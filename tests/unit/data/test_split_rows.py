"""Bundle.split_rows: the rows of a split table in a key range, reading only the row groups whose
footer statistics meet it (range-partitioned held-out splits), and still right on an old,
round-robin (unsorted) bundle, where it reads everything."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle
from distrec.data.heldout import heldout_pairs
from tests.helpers.bundles import write_tiny_bundle


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return write_tiny_bundle(
        tmp_path / "b", users=90, items=40, behaviors=("view", "buy"), groups=12, graph_parts=6
    )


def _rows(t: pa.Table, key: str) -> list[tuple[int, int]]:
    return sorted(zip(t[key].to_pylist(), t["item"].to_pylist(), strict=True))


@pytest.mark.parametrize(("table", "key"), [("interactions", "user"), ("groups/items", "group")])
def test_range_rows_equal_the_filtered_whole_table(bundle: Path, table: str, key: str) -> None:
    b = Bundle(bundle)
    n = b.manifest.num_users if key == "user" else b.manifest.num_groups
    for split in ("valid", "test"):
        whole = b.table(table, split=split)
        keys = whole[key].to_numpy()
        for lo, hi in ((0, n), (0, n // 3), (n // 3, n // 3 + 1), (n - 5, n), (7, 7)):
            b.rows_scanned.clear()
            got = b.split_rows(table, split, key, lo, hi)
            assert got.column_names == whole.column_names
            sel = whole.filter(pa.array((keys >= lo) & (keys < hi)))
            assert _rows(got, key) == _rows(sel, key), (split, lo, hi)
            if hi - lo <= n // 3:  # a narrow range decodes only the files meeting it
                assert b.rows_scanned.get(table, 0) < whole.num_rows


def test_unsorted_bundle_gives_the_same_rows(bundle: Path, tmp_path: Path) -> None:
    """An old bundle's held-out split: one shuffled round-robin file. Same rows, all decoded."""
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    d = old / "interactions" / "split=valid"
    t = pa.concat_tables([pq.read_table(f) for f in sorted(d.glob("*.parquet"))])
    shutil.rmtree(d)
    d.mkdir()
    pq.write_table(t.take(np.random.default_rng(0).permutation(t.num_rows)), d / "part-0.parquet")
    new_b, old_b = Bundle(bundle), Bundle(old)
    for lo, hi in ((0, 30), (30, 60), (60, 90)):  # on the file edges (90 users, 6 files)
        a = heldout_pairs(new_b, "interactions", "user", "valid", lo, hi, 40, "buy")
        c = heldout_pairs(old_b, "interactions", "user", "valid", lo, hi, 40, "buy")
        np.testing.assert_array_equal(a.indptr, c.indptr)
        np.testing.assert_array_equal(a.indices, c.indices)
    assert old_b.rows_scanned["interactions"] == 3 * t.num_rows  # no statistics to prune with
    assert new_b.rows_scanned["interactions"] == t.num_rows  # each range file once


def test_behavior_filter_and_missing_split(bundle: Path) -> None:
    b = Bundle(bundle)
    t = b.split_rows("interactions", "train", "user", 0, 90, ["user", "item"], behavior="view")
    assert set(t["behavior"].to_pylist()) == {0}
    assert t.num_rows == int((b.interactions("train")["behavior"] == 0).sum())
    shutil.rmtree(bundle / "groups" / "items" / "split=test")
    assert b.split_rows("groups/items", "test", "group", 0, 12).num_rows == 0
