"""Synthetic logs: format contract, planted structure that is learnable, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distrec.synth import generate, main

REPO = Path(__file__).resolve().parents[2]


def _events(d: Path) -> pd.DataFrame:
    parts = sorted((d / "events").glob("part-*.csv"))
    return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)


def _truth(d: Path) -> tuple[dict[str, int], dict[str, set[int]], dict[str, list[int]]]:
    items = pd.read_csv(d / "truth" / "items-00000.csv")
    users = pd.read_csv(d / "truth" / "users-00000.csv")
    cl = dict(zip(items.item_id, items.cluster, strict=True))
    cols = [c for c in users.columns if c.startswith("interest")]
    ordered = {
        r[0]: [int(x) for x in r[1:] if x >= 0]
        for r in users[["user_id", *cols]].itertuples(index=False)
    }
    return cl, {u: set(v) for u, v in ordered.items()}, ordered


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s") / "mb"
    generate(
        "multibehavior",
        1500,
        400,
        out,
        seed=3,
        interactions_per_user=20,
        chunk_rows=10_000,
        progress=False,
    )
    return out


def test_format_contract(multi: Path) -> None:
    meta = json.loads((multi / "meta.json").read_text())
    assert meta["kind"] == "multibehavior" and meta["users"] == 1500 and meta["items"] == 400
    assert meta["behaviors"][-1] == "buy" and meta["groups"] == 0 and meta["interests"] >= 2
    parts = sorted((multi / "events").glob("part-*.csv"))
    assert len(parts) == meta["rows"]["event_parts"] > 1
    assert parts[0].read_text().splitlines()[0] == "user_id,item_id,behavior,timestamp"
    ev = _events(multi)
    assert len(ev) == meta["rows"]["events"]
    assert all(len(pd.read_csv(p)) <= 10_000 for p in parts)
    assert ev.user_id.str.fullmatch(r"u\d+").all() and ev.item_id.str.fullmatch(r"i\d+").all()
    assert set(ev.behavior) == set(meta["behaviors"]) and ev.timestamp.dtype == np.int64
    assert ev.user_id.nunique() == 1500
    assert not list(multi.parent.glob(".mb.tmp-*"))


def test_funnel_ordered_and_correlated_with_interest(multi: Path) -> None:
    ev = _events(multi)
    n = ev.behavior.value_counts()
    assert n["view"] > n["cart"] > n["buy"] and n["view"] > n["fav"] > n["buy"]
    cl, ints, _ = _truth(multi)
    inside = np.array([cl[i] in ints[u] for u, i in zip(ev.user_id, ev.item_id, strict=True)])
    # conversion to buy is higher for views inside the user's interests than outside
    view, buy = ev.behavior == "view", ev.behavior == "buy"
    rate_in = (buy & inside).sum() / (view & inside).sum()
    rate_out = (buy & ~inside).sum() / max((view & ~inside).sum(), 1)
    assert rate_in > 2 * rate_out


def test_heldout_events_learnable_from_history(multi: Path) -> None:
    """A cheap 'model' (the user's most frequent train clusters) predicts the cluster of held-out
    later buys far better than the global popularity of clusters does."""
    ev = _events(multi)
    cl, ints, ordered = _truth(multi)
    ev["cluster"] = ev.item_id.map(cl)
    ev = ev.sort_values(["user_id", "timestamp"])
    rank = ev.groupby("user_id").cumcount()
    size = ev.groupby("user_id").user_id.transform("size")
    train, held = ev[rank < 0.8 * size], ev[(rank >= 0.8 * size) & (ev.behavior == "buy")]
    top = train.groupby("user_id").cluster.agg(lambda s: set(s.value_counts().index[:2]))
    popular = set(train.cluster.value_counts().index[:2])
    hit_model = np.mean([c in top[u] for u, c in zip(held.user_id, held.cluster, strict=True)])
    hit_pop = np.mean([c in popular for c in held.cluster])
    assert len(held) > 200 and hit_model > 0.7 and hit_model > 2 * hit_pop
    # truth: held-out buys sit in the user's interests far above chance
    chance = (
        np.mean([len(s) for s in ints.values()])
        / json.loads((multi / "meta.json").read_text())["interests"]
    )
    inside = np.mean([c in ints[u] for u, c in zip(held.user_id, held.cluster, strict=True)])
    assert inside > 0.85 and inside > 3 * chance
    # drift: the last interest is more frequent late in a user's history than early
    multi_users = {u for u, v in ordered.items() if len(v) >= 2}
    views = ev[(ev.behavior == "view") & ev.user_id.isin(multi_users)].copy()
    views["last"] = [ordered[u][-1] == c for u, c in zip(views.user_id, views.cluster, strict=True)]
    vr = views.groupby("user_id").cumcount() / views.groupby("user_id").user_id.transform("size")
    assert views["last"][vr >= 0.75].mean() > views["last"][vr < 0.25].mean() + 0.15


def test_groups_share_interests(tmp_path: Path) -> None:
    out = tmp_path / "g"
    meta = generate("group", 800, 300, out, seed=1, interactions_per_user=10, progress=False)
    assert meta["groups"] == 160 and meta["behaviors"] == ["buy"]
    members = pd.read_csv(out / "groups" / "members-00000.csv")
    gev = pd.read_csv(out / "groups" / "events-00000.csv")
    assert list(gev.columns) == ["group_id", "item_id", "timestamp"]
    gcl = pd.read_csv(out / "truth" / "groups-00000.csv").set_index("group_id").cluster
    cl, ints, _ = _truth(out)
    assert all(gcl[g] in ints[u] for g, u in zip(members.group_id, members.user_id, strict=True))
    in_cluster = np.mean([cl[i] == gcl[g] for g, i in zip(gev.group_id, gev.item_id, strict=True)])
    assert in_cluster > 0.8 and members.groupby("group_id").size().max() <= 8


def test_sequence_deterministic_and_refuses_existing(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert (
            main(
                [
                    "--kind",
                    "sequence",
                    "--users",
                    "50",
                    "--items",
                    "40",
                    "--out",
                    str(d),
                    "--seed",
                    "7",
                    "--quiet",
                ]
            )
            == 0
        )
    fa, fb = sorted((a / "events").glob("*.csv")), sorted((b / "events").glob("*.csv"))
    assert [f.read_bytes() for f in fa] == [f.read_bytes() for f in fb]
    assert set(_events(a).behavior) == {"click"}
    assert (
        main(["--kind", "sequence", "--users", "50", "--items", "40", "--out", str(a), "--quiet"])
        == 2
    )
    assert (
        main(
            [
                "--kind",
                "group",
                "--users",
                "1",
                "--items",
                "40",
                "--out",
                str(tmp_path / "c"),
                "--quiet",
            ]
        )
        == 2
    )
    assert not (tmp_path / "c").exists()


_PEAK = (
    "import resource, sys; from distrec.synth import main; "
    "rc = main(sys.argv[1:]); print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)


def _peak_kb(out: Path, users: int) -> tuple[int, int]:
    args = [
        "--kind",
        "sequence",
        "--users",
        str(users),
        "--items",
        "5000",
        "--interactions-per-user",
        "50",
    ]
    args += ["--chunk-rows", "100000", "--out", str(out), "--quiet"]
    r = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "meta.json").read_text())["rows"]["events"]
    return int(r.stdout.split("PEAK")[-1]), rows


def test_memory_bounded_in_rows(tmp_path: Path) -> None:
    """10x the rows (0.2M -> 2M) must not grow peak RSS by more than a small constant: rows are
    generated per user block and appended to CSV parts."""
    small_kb, small_rows = _peak_kb(tmp_path / "small", 4_000)
    big_kb, big_rows = _peak_kb(tmp_path / "big", 40_000)
    assert big_rows > 1_900_000 and big_rows > 9 * small_rows
    # holding 2M rows would take > 100 MB (4 int64 columns alone are 64 MB)
    assert big_kb - small_kb < 40_000, (small_kb, big_kb)
    assert len(list((tmp_path / "big" / "events").glob("part-*.csv"))) >= 19
