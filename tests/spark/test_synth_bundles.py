"""Synthetic logs (the distrec.synth contract) through every split protocol."""

from __future__ import annotations

import pytest

from distrec.data.schema import Manifest
from spark_jobs.build_bundle import build
from spark_jobs.options import OptionError, parse_overrides
from tests.spark.util import graph_dict, manifest, table, write_synth


def test_multibehavior_random_per_user(spark, tmp_path):
    src = write_synth(tmp_path / "raw", users=40, per_user=12)
    out = tmp_path / "b"
    s = build(spark, "synth", str(src), str(out), quiet=True)
    m = Manifest.load(str(out))  # the reader's own validation accepts it
    assert m.behaviors == ["view", "cart", "buy"] and m.split["protocol"] == "random_per_user"
    assert s["rows_rejected"] == 0
    inter = table(out, "interactions").to_pylist()
    assert len(inter) == s["rows_in"]
    # only the target behavior is held out; auxiliary behaviors stay in train
    assert all(r["split"] == "train" for r in inter if r["behavior"] != 2)
    # ids: "u17" style raw ids, contiguous indices
    ids = table(out, "ids/users").to_pydict()
    assert sorted(ids["idx"]) == list(range(m.num_users))
    for b in m.behaviors:
        g = graph_dict(out, f"ui.{b}")
        gi = graph_dict(out, f"iu.{b}")
        assert g == {(i, u): w for (u, i), w in gi.items()}  # iu is the transpose of ui
    # graph files cover contiguous inclusive src ranges, listed in the manifest
    files = m.tables["graphs/ui.view"].files or []
    rng = [(f["src_lo"], f["src_hi"]) for f in files]
    assert rng[0][0] == 0 and rng[-1][1] == m.num_users - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(rng, rng[1:]))  # contiguous, disjoint


def test_leave_one_out_and_sequences(spark, tmp_path):
    src = write_synth(tmp_path / "raw", kind="sequence", users=30, per_user=8)
    out = tmp_path / "b"
    build(spark, "synth", str(src), str(out), parse_overrides(["split=leave_one_out"]), quiet=True)
    inter = table(out, "interactions").to_pylist()
    by_user: dict[int, list] = {}
    for r in inter:
        by_user.setdefault(r["user"], []).append(r)
    for rows in by_user.values():
        rows.sort(key=lambda r: r["ts"])
        assert rows[-1]["split"] == "test" and rows[-2]["split"] == "valid"
        assert all(r["split"] == "train" for r in rows[:-2])
    seqs = {r["user"]: r for r in table(out, "sequences").to_pylist()}
    for u, rows in by_user.items():
        assert seqs[u]["items"] == [r["item"] for r in rows[:-2]]
        assert seqs[u]["ts"] == sorted(seqs[u]["ts"])


def test_chunks_and_user_holdout(spark, tmp_path):
    src = write_synth(tmp_path / "raw", kind="sequence", users=30, items=400, per_user=150)
    out = tmp_path / "c"
    build(
        spark,
        "synth",
        str(src),
        str(out),
        parse_overrides(["split=chunks", "chunk_size=20", "chunk_input=10", "chunk_negatives=7"]),
        quiet=True,
    )
    m = manifest(out)
    ev = table(out, "eval/chunks").to_pylist()
    raw_seq: dict[int, set] = {}
    for r in table(out, "interactions").to_pylist():
        raw_seq.setdefault(r["user"], set()).add(r["item"])
    assert ev and all(len(r["input"]) == 10 and len(r["targets"]) == 10 for r in ev)
    for r in ev:
        assert len(set(r["candidates"])) == 7
        assert not set(r["candidates"]) & (
            raw_seq.get(r["user"], set()) | set(r["input"]) | set(r["targets"])
        )
    assert {r["split"] for r in ev} == {"train", "valid", "test"}
    assert m["split"]["chunk_size"] == 20
    out2 = tmp_path / "h"
    build(spark, "synth", str(src), str(out2), parse_overrides(["split=user_holdout"]), quiet=True)
    ev2 = table(out2, "eval/user_holdout").to_pylist()
    assert len(ev2) == 6  # 3 valid + 3 test of 30 users
    for r in ev2:
        n = len(r["input"]) + len(r["targets"])
        assert len(r["input"]) == int(n * 0.8) and r["input_ts"] == sorted(r["input_ts"])
        assert r["candidates"] == []


def test_groups_with_derived_group_items(spark, tmp_path):
    src = write_synth(tmp_path / "raw", kind="group", users=40, per_user=10, groups=8)
    out = tmp_path / "g"
    build(spark, "synth", str(src), str(out), parse_overrides(["group_items_top=5"]), quiet=True)
    m = manifest(out)
    assert m["counts"]["groups"] == 8
    gi = graph_dict(out, "group_item")
    per_group: dict[int, int] = {}
    for g, _ in gi:
        per_group[g] = per_group.get(g, 0) + 1
    assert max(per_group.values()) <= 5
    assert "derived" in m["filters"]["graphs"]["group_item"]


def test_bad_options_name_the_key():
    with pytest.raises(OptionError, match="unknown option 'spilt'"):
        parse_overrides(["spilt=given"])
    with pytest.raises(OptionError, match="seed: expected an integer"):
        parse_overrides(["seed=x"])
