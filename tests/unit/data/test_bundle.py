"""Bundle reader: manifest validation, typed tables, graphs as CSR, raw ids, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.schema import BundleFormatError
from tests.helpers.bundles import write_tiny_bundle


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    p = write_tiny_bundle(
        tmp_path_factory.mktemp("b") / "bundle",
        users=30,
        items=25,
        behaviors=("view", "cart", "buy"),
        groups=5,
        eval_candidates=8,
    )
    return Bundle(p)


def test_manifest_and_counts(multi: Bundle) -> None:
    m = multi.manifest
    assert (m.num_users, m.num_items, m.num_groups) == (30, 25, 5)
    assert m.target_behavior == "buy"
    for s in ("train", "valid", "test"):
        assert multi.table("interactions", split=s).num_rows == m.counts[f"interactions.{s}"]


def test_interactions_typed_and_filtered(multi: Bundle) -> None:
    all_train = multi.interactions("train")
    buy = multi.interactions("train", "buy")
    assert set(buy) == {"user", "item", "behavior", "ts"}
    assert buy["user"].dtype == np.int64 and buy["behavior"].dtype == np.int8
    assert (buy["behavior"] == 2).all() and buy["user"].size < all_train["user"].size
    with pytest.raises(KeyError, match="behaviors"):
        multi.interactions("train", "click")


def test_graph_symmetric_normalisation(multi: Bundle) -> None:
    ui, iu = multi.graph("ui.buy"), multi.graph("iu.buy")
    assert (ui.num_src, ui.num_dst, iu.num_src, iu.num_dst) == (30, 25, 25, 30)
    # w = 1/sqrt(deg_u deg_i) recomputed from the CSR degrees themselves
    du, di = ui.degrees(), iu.degrees()
    src = ui.sources()
    np.testing.assert_allclose(ui.weights, 1 / np.sqrt(du[src] * di[ui.indices]), rtol=1e-6)
    # iu is the transpose of ui
    t = ui.transpose()
    np.testing.assert_array_equal(t.indptr, iu.indptr)
    np.testing.assert_array_equal(t.indices, iu.indices)
    # the graph is the deduplicated train buy pairs
    tr = multi.interactions("train", "buy")
    assert ui.contains(tr["user"], tr["item"]).all()
    assert ui.nnz == np.unique(np.stack([tr["user"], tr["item"]]), axis=1).shape[1]


def test_group_graphs_row_normalised(multi: Bundle) -> None:
    for name in ("group_user", "user_group", "group_item"):
        g = multi.graph(name)
        sums = np.add.reduceat(g.weights, g.indptr[:-1][g.degrees() > 0])
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


def test_raw_ids_and_eval_rows(multi: Bundle) -> None:
    items = multi.raw_ids("items")
    assert items.shape == (25,) and len(set(items)) == 25 and all(i.startswith("i") for i in items)
    rows = multi.eval_rows("random_per_user", "test").to_pylist()
    assert rows and all(set(r["targets"]) <= set(r["candidates"]) for r in rows)


def test_csr_contains_and_dedup() -> None:
    c = Csr.from_pairs(np.array([2, 0, 0, 2]), np.array([1, 3, 3, 0]), num_src=3, num_dst=4)
    np.testing.assert_array_equal(c.indptr, [0, 1, 1, 3])
    np.testing.assert_array_equal(c.indices, [3, 0, 1])
    assert c.contains(np.array([0, 0, 2, 1]), np.array([3, 2, 1, 3])).tolist() == [
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="dest ids"):
        Csr.from_pairs(np.array([0]), np.array([9]), num_src=1, num_dst=4)


def test_bad_manifest_version(tiny_bundle: Path) -> None:
    m = json.loads((tiny_bundle / "_manifest.json").read_text())
    m["format_version"] = 99
    (tiny_bundle / "_manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleFormatError, match="format_version 99"):
        Bundle(tiny_bundle)


def test_missing_field_names_file(tiny_bundle: Path) -> None:
    # the held-out splits are user-range files (part-<lo>-<hi>): break the first one
    f = sorted((tiny_bundle / "interactions" / "split=valid").glob("*.parquet"))[0]
    t = pq.read_table(f).drop_columns(["item"])
    pq.write_table(t, f)
    with pytest.raises(BundleFormatError, match=rf"{f.name}.*\['item'\]"):
        Bundle(tiny_bundle).interactions("valid")


def test_out_of_range_id_names_row(tiny_bundle: Path) -> None:
    f = sorted((tiny_bundle / "interactions" / "split=test").glob("*.parquet"))[0]
    t = pq.read_table(f)
    items = t["item"].to_numpy().copy()
    items[3] = 10_000
    pq.write_table(t.set_column(1, "item", pa.array(items)), f)
    with pytest.raises(BundleFormatError, match="row 3 field item"):
        Bundle(tiny_bundle).interactions("test")


def test_spark_style_files_ignored_and_int32_cast(tiny_bundle: Path) -> None:
    d = tiny_bundle / "interactions" / "split=train"
    (d / "_SUCCESS").write_text("")
    (d / ".part-00000.parquet.crc").write_bytes(b"\x00")
    t = pq.read_table(d / "part-00000.parquet")
    pq.write_table(t.set_column(0, "user", t["user"].cast(pa.int32())), d / "part-00000.parquet")
    out = Bundle(tiny_bundle).interactions("train")
    assert out["user"].dtype == np.int64 and out["user"].size == t.num_rows
