"""Partitioned bundle layout (#15 contract, writer side): N balanced files per table and
split, graphs in N contiguous src ranges, files and counts in the manifest; manifest-last
commit in place."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle
from distrec.data.schema import BundleFormatError, Manifest
from spark_jobs.build_bundle import build
from spark_jobs.options import parse_overrides
from spark_jobs.writer import src_range
from tests.spark.util import write_synth

N = 4


@pytest.fixture(scope="module")
def bundle(spark, tmp_path_factory):
    d = tmp_path_factory.mktemp("parts")
    src = write_synth(d / "raw", kind="group", users=50, per_user=10, groups=9)
    out = d / "b"
    build(spark, "synth", str(src), str(out), parse_overrides([f"partitions={N}"]), quiet=True)
    return out


def test_every_table_has_n_balanced_files(bundle):
    m = Manifest.load(str(bundle))
    assert m.format_version == 2 and m.partitions == N
    for name, info in m.tables.items():
        files = info.files
        assert files is not None, name
        assert sum(f["rows"] for f in files) == info.rows, name
        for f in files:  # counts come from the footers of the files listed
            assert pq.ParquetFile(bundle / name / f["path"]).metadata.num_rows == f["rows"]
        listed = {f["path"] for f in files}
        on_disk = {
            os.path.relpath(os.path.join(r, x), bundle / name)
            for r, _, xs in os.walk(bundle / name)
            for x in xs
        }
        assert listed == on_disk, name  # nothing unlisted (no _SUCCESS, .crc)
        if name.startswith("ids/") or name == "_rejected":
            continue
        groups = {}
        for f in files:
            groups.setdefault(f.get("split"), []).append(f)
        if info.partitioned_by == "split":
            assert set(groups) == {"train", "valid", "test"}, name
        for fs in groups.values():
            assert [f["index"] for f in fs] == list(range(N)), name
            rows = [f["rows"] for f in fs]
            if name.startswith("graphs/") or "range_by" in fs[0]:
                continue  # range-partitioned: balanced in keys, not rows
            # round-robin: near-equal (within the number of input partitions)
            assert max(rows) - min(rows) <= max(8, sum(rows) // (4 * N)), (name, rows)


def test_graph_files_are_contiguous_sorted_src_ranges(bundle):
    m = Manifest.load(str(bundle))
    b = Bundle(bundle)
    from distrec.data.bundle import graph_shape

    for name, info in m.tables.items():
        if not name.startswith("graphs/"):
            continue
        num_src, _ = graph_shape(name.split("/", 1)[1], m)
        seen = []
        for f in info.files:
            lo, hi = f["src_lo"], f["src_hi"]
            assert (lo, hi) == src_range(f["index"], N, num_src)
            src = pq.read_table(bundle / name / f["path"]).column("src").to_pylist()
            assert src == sorted(src) and all(lo <= s <= hi for s in src), (name, f)
            seen += src
        assert seen == sorted(set(seen))  # files in src order, each src in one file
        assert len(b.graph(name.split("/", 1)[1]).indptr) == num_src + 1  # reader still reads it


@pytest.fixture(scope="module")
def group_bundle(spark, tmp_path_factory):
    """Given group-item pairs (groups/items with its own valid / test) through the generic
    reader: 40 users, 12 groups, random_per_user / per group split."""
    d = tmp_path_factory.mktemp("gparts")
    raw = d / "raw"
    raw.mkdir()
    inter = ["user_id,item_id"] + [f"{u},{(u * 3 + k) % 25}" for u in range(40) for k in range(8)]
    (raw / "interactions.csv").write_text("\n".join(inter) + "\n")
    mem = ["group_id,user_id"] + [f"{g},{(g * 5 + k) % 40}" for g in range(12) for k in range(4)]
    (raw / "members.csv").write_text("\n".join(mem) + "\n")
    gi = ["gid,iid"] + [f"{g},{(g + 2 * k) % 25}" for g in range(12) for k in range(9)]
    (raw / "group_items.csv").write_text("\n".join(gi) + "\n")
    ov = ["group_items.col.group=gid", "group_items.col.item=iid", f"partitions={N}",
          "split=random_per_user", "valid_ratio=0.2", "test_ratio=0.2"]  # fmt: skip
    build(spark, "generic", str(raw), str(d / "b"), parse_overrides(ov), quiet=True)
    return d / "b"


@pytest.mark.parametrize("which", ["bundle", "group_bundle"])
def test_heldout_split_files_are_contiguous_sorted_key_ranges(request, which):
    """valid / test of interactions (by user) and groups/items (by group): file k holds the keys
    of range k, sorted, so a rank reads only the files of its block; train stays round-robin."""
    bundle = request.getfixturevalue(which)
    m = Manifest.load(str(bundle))
    b = Bundle(bundle)
    tables = [("interactions", "user", m.num_users)]
    if which == "group_bundle":
        assert "groups/items" in m.tables
        tables.append(("groups/items", "group", m.num_groups))
    for name, key, n in tables:
        info = m.tables[name]
        for split in ("train", "valid", "test"):
            fs = [f for f in info.files if f["split"] == split]
            if split == "train":
                assert all("range_by" not in f for f in fs)
                continue
            seen = []
            for f in fs:
                assert f["range_by"] == key
                lo, hi = f["key_lo"], f["key_hi"]
                assert (lo, hi) == src_range(f["index"], N, n)
                t = pq.read_table(bundle / name / f["path"])
                keys = list(zip(t.column(key).to_pylist(), t.column("item").to_pylist()))
                assert keys == sorted(keys) and all(lo <= k <= hi for k, _ in keys), (name, f)
                seen += [k for k, _ in keys]
            assert seen == sorted(seen)  # files in key order, each key in one file
            whole = b.table(name, split=split)
            assert len(seen) == whole.num_rows > 0, (name, split)
            # a block read decodes only the files meeting it, and gets its rows exactly
            half = n // 2
            b.rows_scanned.clear()
            got = b.split_rows(name, split, key, 0, half)
            want = sum(1 for k in whole.column(key).to_pylist() if k < half)
            assert got.num_rows == want
            assert b.rows_scanned[name] == sum(f["rows"] for f in fs if f["key_lo"] < half)


def test_inplace_commit_writes_manifest_last(spark, tmp_path):
    src = write_synth(tmp_path / "raw", users=20, per_user=6)
    out = tmp_path / "b"
    out.mkdir()
    (out / "_manifest.json").write_text("{}")  # an old bundle: its manifest goes first
    (out / "stale.parquet").write_text("x")
    build(
        spark,
        "synth",
        str(src),
        str(out),
        parse_overrides(["commit=inplace", "partitions=2"]),
        quiet=True,
    )
    assert not (out / "stale.parquet").exists()
    man = (out / "_manifest.json").stat().st_mtime_ns
    data = [
        os.stat(os.path.join(r, x)).st_mtime_ns
        for r, _, xs in os.walk(out)
        for x in xs
        if x != "_manifest.json"
    ]
    assert data and max(data) <= man
    assert not list(tmp_path.glob(".b.tmp-*"))  # no temporary sibling in place mode
    Bundle(out)
    os.remove(out / "_manifest.json")
    with pytest.raises(BundleFormatError, match="no _manifest.json"):
        Bundle(out)


def test_version_1_manifest_still_reads():
    m = Manifest.from_dict(
        {
            "format_version": 1,
            "name": "old",
            "source": "synth",
            "counts": {"users": 2, "items": 3},
            "behaviors": ["buy"],
            "split": {"protocol": "given"},
            "tables": {"interactions": {"path": "interactions", "rows": 4, "schema": {}}},
        }
    )
    assert m.partitions == 0 and m.tables["interactions"].files is None
    with pytest.raises(BundleFormatError, match="format_version 3 is not supported"):
        Manifest.from_dict({"format_version": 3})
