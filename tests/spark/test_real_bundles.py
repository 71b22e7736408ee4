"""Bundles of the five real data sets; counts checked against each SOURCE.md's statistics."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from spark_jobs.build_bundle import build
from spark_jobs.options import parse_overrides
from tests.spark.conftest import data_dir
from tests.spark.util import graph_dict, manifest, table

pytestmark = pytest.mark.realdata


def _build(spark, tmp_path_factory, source: str, *overrides: str):
    src = data_dir(source)
    out = tmp_path_factory.mktemp("bundles") / source
    build(spark, source, str(src), str(out), parse_overrides(list(overrides)), quiet=True)
    return out


def _pairs(t) -> set[tuple[int, int]]:
    return set(zip(t.column("user").to_pylist(), t.column("item").to_pylist()))


def test_mafengwo_random_per_user(spark, tmp_path_factory):
    out = _build(spark, tmp_path_factory, "mafengwo")
    m = manifest(out)
    c = m["counts"]
    assert (c["users"], c["items"], c["groups"]) == (5275, 1513, 995)
    assert m["split"]["protocol"] == "random_per_user"
    inter = table(out, "interactions")
    assert inter.num_rows == 38011 + 1754  # train + test, no duplicate pairs
    splits = {
        s: inter.filter(pc.equal(inter.column("split"), s)) for s in ("train", "valid", "test")
    }
    p = {s: _pairs(t) for s, t in splits.items()}
    assert (
        not (p["train"] & p["test"])
        and not (p["train"] & p["valid"])
        and not (p["valid"] & p["test"])
    )
    share = len(p["test"]) / inter.num_rows
    assert 0.08 < share < 0.12  # ~10% per user in expectation
    # every user with interactions keeps at least one training pair
    assert set(splits["train"].column("user").to_pylist()) == set(inter.column("user").to_pylist())
    assert table(out, "groups/members").num_rows == 9580
    gi = table(out, "groups/items")
    assert gi.num_rows == 2600 + 995
    assert 0.05 < gi.filter(pc.equal(gi.column("split"), "test")).num_rows / gi.num_rows < 0.15
    # ids: 0-based raw ids map to themselves
    ids = table(out, "ids/users").to_pydict()
    assert all(int(r) == i for r, i in zip(ids["raw_id"], ids["idx"]))
    # graph weights: symmetric normalisation over the training split
    train = splits["train"]
    du = np.bincount(train.column("user").to_numpy(), minlength=c["users"])
    di = np.bincount(train.column("item").to_numpy(), minlength=c["items"])
    g = graph_dict(out, "ui.buy")
    assert set(g) == p["train"]
    u, i = next(iter(g))
    assert g[(u, i)] == pytest.approx(1 / np.sqrt(du[u] * di[i]), rel=1e-6)
    gu = graph_dict(out, "group_user")
    assert len(gu) == 9580
    assert m["tables"]["graphs/user_group"]["rows"] == 5275


@pytest.mark.slow
def test_jd_given_split_without_union_leak(spark, tmp_path_factory):
    out = _build(spark, tmp_path_factory, "jd_vcgae")
    m = manifest(out)
    c = m["counts"]
    assert m["behaviors"] == ["pv", "fav", "buy"]
    # SOURCE.md's 13,072 distinct items include the `union` file; 14 items occur only there
    # (in its leaked extra pairs), so a bundle that ignores `union` has fewer.
    d = data_dir("jd_vcgae")
    items = set()
    for f in ("trn_pv", "trn_fav", "trn_buy", "vld_buy", "tst_buy"):
        items |= {ln.split()[1] for ln in (d / f).read_text().splitlines() if ln.strip()}
    union_items = {ln.split()[1] for ln in (d / "union").read_text().splitlines() if ln.strip()}
    assert len(items | union_items) == 13072
    assert (c["users"], c["items"]) == (10690, len(items))
    assert (c["behavior.pv"], c["behavior.fav"]) == (217977, 7380)
    assert c["behavior.buy"] == 60967 + 5892 + 5013
    assert (c["interactions.valid"], c["interactions.test"]) == (5892, 5013)
    # 1-based ids shift to 0-based: idx = raw - 1 for every occurring id
    ids = table(out, "ids/users").to_pydict()
    assert all(int(r) - 1 == i for r, i in zip(ids["raw_id"], ids["idx"]))
    assert m["tables"]["graphs/ui.fav"]["rows"] == 2228


@pytest.mark.slow
def test_gowalla_user_holdout(spark, tmp_path_factory):
    out = _build(spark, tmp_path_factory, "gowalla_1000u")
    m = manifest(out)
    assert m["counts"]["users"] == 1000 and m["split"]["protocol"] == "user_holdout"
    assert m["rejected"]["rows_in"] == 157251  # the last line has no newline; still read
    assert m["filters"]["dedup_removed"] == 157251 - 92845  # repeat visits
    ev = table(out, "eval/user_holdout")
    assert ev.num_rows == 200  # 100 valid + 100 test users (8:1:1)
    for r in ev.slice(0, 50).to_pylist():
        ts = r["input_ts"]
        assert ts == sorted(ts)  # newest-first file reversed to chronological
        n = len(r["input"]) + len(r["targets"])
        assert len(r["input"]) == max(1, int(n * 0.8))
    seq = table(out, "sequences")
    assert seq.num_rows == 800
    assert all(t == sorted(t) for t in seq.column("ts").to_pylist()[:100])


@pytest.mark.slow
def test_beauty_user_holdout(spark, tmp_path_factory):
    out = _build(spark, tmp_path_factory, "amazon_beauty")
    c = manifest(out)["counts"]
    assert (c["users"], c["items"]) == (22363, 12101)
    assert c["behavior.review"] == 198502  # includes held-out users' input prefixes
    seq = table(out, "sequences")
    ev = table(out, "eval/user_holdout")
    # every interaction is either in a training sequence, an input prefix or a target
    n = sum(len(x) for x in seq.column("items").to_pylist())
    n += sum(len(x) for x in ev.column("input").to_pylist())
    n += sum(len(x) for x in ev.column("targets").to_pylist())
    assert n == 198502
    assert ev.num_rows == 2 * round(22363 * 0.1)


@pytest.mark.slow
def test_ml100k_chunks(spark, tmp_path_factory):
    out = _build(spark, tmp_path_factory, "ml-100k")
    m = manifest(out)
    src = data_dir("ml-100k") / "ml-100k.inter"
    rows = [line.split("\t") for line in src.read_text().splitlines()[1:]]
    assert len(rows) == 100000
    per_user = np.bincount([int(r[0]) for r in rows])
    assert m["counts"]["users"] == int((per_user >= 100).sum())
    ev = table(out, "eval/chunks")
    assert ev.num_rows == int((per_user[per_user >= 100] // 100).sum())
    uid = dict(zip(*table(out, "ids/users").to_pydict().values()))
    iid = dict(zip(*table(out, "ids/items").to_pydict().values()))
    seen: dict[int, set[int]] = {}  # every item of the user in the raw file, not only a chunk
    for r in rows:
        if r[0] in uid:
            seen.setdefault(uid[r[0]], set()).add(iid[r[1]])
    for r in ev.to_pylist():
        assert len(r["input"]) == 50 and len(r["targets"]) == 50
        cand = r["candidates"]
        assert len(cand) == 50 == len(set(cand))
        assert not set(cand) & seen[r["user"]]
