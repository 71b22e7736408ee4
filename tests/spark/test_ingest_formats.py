"""Generic ingest (#17): Spark's readers, ids, timestamps, behaviors, groups, presets, errors.

User errors go through the CLI entry point (``main``) in this process, so the shared
session is reused; each one must exit 2 with a single line on stderr and no traceback.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq

from spark_jobs.build_bundle import build, main
from spark_jobs.options import parse_overrides
from tests.spark.util import manifest, table


def _cli_error(capfd, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and one stderr line without a traceback; return the line."""
    capfd.readouterr()
    rc = main(["--driver-memory", "1g", *argv])
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("build_bundle: error:")]
    assert rc == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    return lines[0]


def _ids(out: Path, kind: str) -> dict[str, int]:
    t = table(out, f"ids/{kind}").to_pydict()
    return dict(zip(t["raw_id"], t["idx"]))


def _epoch(s: str) -> int:
    return int(dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp())


CSV = """user_id,item_id,event,when,note
516.0,"Lamp, brass",view,2024-01-02T03:04:05Z,"said ""hi"", left"
516.0,"Lamp, brass",buy,2024-01-02T05:00:00+02:00,plain
517.0,Chair,view,2024-01-03 10:00:00,"a,b,c"
517.0,"Lamp, brass",buy,2024-01-04T00:00:00.250Z,x
518.0,Chair,view,2024-01-05T00:00:00Z,y
"""


def test_csv_quotes_iso_timestamps_float_ids(spark, tmp_path, capfd):
    raw = tmp_path / "shop.csv"
    raw.write_text(CSV)
    base = [
        "--source",
        "generic",
        "--input",
        str(raw),
        "--out",
        str(tmp_path / "bad"),
        "col.behavior=event",
        "col.timestamp=when",
        "behaviors=view,buy",
    ]
    err = _cli_error(capfd, base)
    assert "float-style id '516.0'" in err and "shop.csv:2" in err and "float_ids=true" in err
    out = tmp_path / "b"
    opts = ["col.behavior=event", "col.timestamp=when", "behaviors=view,buy", "float_ids=true"]
    opts += ["tz=Europe/Paris", "partitions=2"]
    build(spark, "generic", str(raw), str(out), parse_overrides(opts), quiet=True)
    m = manifest(out)
    assert m["rejected"]["rows"] == 0
    assert sorted(_ids(out, "users")) == ["516", "517", "518"]
    assert sorted(_ids(out, "items")) == ["Chair", "Lamp, brass"]  # the quoted comma stays
    uid, iid = _ids(out, "users"), _ids(out, "items")
    got = {
        (r["user"], r["item"], r["behavior"]): r["ts"]
        for r in table(out, "interactions").to_pylist()
    }
    lamp, chair = iid["Lamp, brass"], iid["Chair"]
    assert got[(uid["516"], lamp, 0)] == _epoch("2024-01-02T03:04:05Z")
    assert got[(uid["516"], lamp, 1)] == _epoch("2024-01-02T03:00:00Z")  # +02:00 offset
    # no offset: wall-clock time in tz (Paris is UTC+1 in January)
    assert got[(uid["517"], chair, 0)] == _epoch("2024-01-03T09:00:00Z")
    assert got[(uid["517"], lamp, 1)] == _epoch("2024-01-04T00:00:00Z")  # fraction floored
    assert m["behaviors"] == ["view", "buy"]


def test_behavior_order_mapping_and_errors(spark, tmp_path, capfd):
    d = tmp_path / "raw"
    d.mkdir()
    rows = ["uid\tiid\tkind\tts"] + [
        f"u{u}\ti{(u * 7 + k) % 30}\t{1 + (u + k) % 3}\t{1_700_000_000 + 60 * k}"
        for u in range(20)
        for k in range(8)
    ]
    (d / "log.tsv").write_text("\n".join(rows) + "\n")
    base = ["--source", "generic", "--input", str(d), "--out", str(tmp_path / "x"), "format=tsv"]
    base += ["col.user=uid", "col.item=iid", "col.behavior=kind"]
    err = _cli_error(capfd, base)
    assert "3 behaviors found (1, 2, 3)" in err and "behaviors=" in err and "log.tsv" in err
    err = _cli_error(capfd, [*base, "behavior_map=1:view,2:cart,3:buy"])
    assert "3 behaviors found (buy, cart, view)" in err
    err = _cli_error(
        capfd, [*base, "behavior_map=1:view,2:cart,3:buy", "behaviors=view,cart,buy", "target=cart"]
    )
    assert "target=cart" in err and "last" in err
    out = tmp_path / "ok"
    ov = ["format=tsv", "col.user=uid", "col.item=iid", "col.behavior=kind"]
    ov += [
        "behavior_map=1:view,2:cart,3:buy",
        "behaviors=view,cart,buy",
        "target=buy",
        "partitions=2",
    ]
    build(spark, "generic", str(d), str(out), parse_overrides(ov), quiet=True)
    m = manifest(out)
    assert m["behaviors"] == ["view", "cart", "buy"]
    n = {
        b: sum(1 for ln in rows[1:] if ln.split("\t")[2] == r)
        for r, b in (("1", "view"), ("2", "cart"), ("3", "buy"))
    }
    assert {b: m["counts"][f"behavior.{b}"] for b in n} == n


def test_parquet_orc_timestamp_columns_zero_based_ids(spark, tmp_path):
    users = [0, 0, 1, 2, 2, 3] * 3
    items = [0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0, 2, 3, 4, 5, 0, 1]
    t0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    when = [t0 + dt.timedelta(hours=k) for k in range(len(users))]
    tab = pa.table(
        {
            "user": pa.array(users, pa.int64()),
            "item": pa.array(items, pa.int32()),
            "ts": pa.array(when, pa.timestamp("us", tz="UTC")),
            "ts_local": pa.array([w.replace(tzinfo=None) for w in when], pa.timestamp("us")),
        }
    )
    (tmp_path / "pq").mkdir()
    pq.write_table(tab, tmp_path / "pq" / "part-0.parquet")
    got = {}
    for name, fmt, col, extra in (
        ("p", "parquet", "ts", []),
        ("n", "parquet", "ts_local", ["tz=America/New_York"]),
    ):
        out = tmp_path / name
        ov = [f"format={fmt}", f"col.timestamp={col}", "partitions=2", *extra]
        build(spark, "generic", str(tmp_path / "pq"), str(out), parse_overrides(ov), quiet=True)
        got[name] = {
            (r["user"], r["item"]): r["ts"] for r in table(out, "interactions").to_pylist()
        }
        # 0-based integer ids map to themselves
        assert all(int(k) == v for k, v in _ids(out, "users").items())
        assert all(int(k) == v for k, v in _ids(out, "items").items())
    want: dict[tuple[int, int], int] = {}
    for u, i, w in zip(users, items, when):  # repeated pairs: dedup keeps the earliest
        want[(u, i)] = min(want.get((u, i), 2**62), int(w.timestamp()))
    assert got["p"] == want
    # TIMESTAMP_NTZ is wall-clock time in tz (New York is UTC-5 in early March)
    assert got["n"] == {k: v + 5 * 3600 for k, v in want.items()}
    (tmp_path / "orc").mkdir()
    orc.write_table(tab.select(["user", "item", "ts"]), str(tmp_path / "orc" / "a.orc"))
    out = tmp_path / "o"
    build(
        spark,
        "generic",
        str(tmp_path / "orc"),
        str(out),
        parse_overrides(["format=orc", "col.timestamp=ts", "partitions=2"]),
        quiet=True,
    )
    assert {(r["user"], r["item"]): r["ts"] for r in table(out, "interactions").to_pylist()} == want


def test_json_lines_and_mixed_ids(spark, tmp_path, capfd):
    d = tmp_path / "js"
    d.mkdir()
    recs = [
        json.dumps({"user": f"{u}", "item": f"{i}", "timestamp": 1_700_000_000 + i})
        for u in range(5)
        for i in range(6)
    ]
    recs[7] = json.dumps({"user": "u-7", "item": "1", "timestamp": 1_700_000_000})
    (d / "a.jsonl").write_text("\n".join(recs) + "\n")
    args = ["--source", "generic", "--input", str(d), "--out", str(tmp_path / "x"), "format=json"]
    err = _cli_error(capfd, args)
    assert "mixed integer and text ids ('u-7' here" in err and "a.jsonl:8" in err
    out = tmp_path / "ok"
    build(
        spark,
        "generic",
        str(d),
        str(out),
        parse_overrides(["format=json", "id_type=string", "partitions=2"]),
        quiet=True,
    )
    assert "u-7" in _ids(out, "users")


def test_group_data_through_generic(spark, tmp_path):
    d = tmp_path / "grp"
    d.mkdir()
    inter = ["user_id,item_id,split"] + [
        f"{u}.0,{(u * 3 + k) % 25}.0,{'test' if k == 5 else 'train'}"
        for u in range(30)
        for k in range(6)
    ]
    (d / "interactions.csv").write_text("\n".join(inter) + "\n")
    mem = ["group_id,user_id"] + [f"{g}.0,{(g * 5 + k) % 30}.0" for g in range(8) for k in range(4)]
    (d / "members.csv").write_text("\n".join(mem) + "\n")
    gi = ["gid,iid,split"] + [
        f"{g},{(g + k) % 25},{'test' if k == 0 else 'train'}" for g in range(8) for k in range(5)
    ]
    (d / "group_items.csv").write_text("\n".join(gi) + "\n")
    out = tmp_path / "b"
    ov = ["float_ids=true", "group_items.col.group=gid", "group_items.col.item=iid", "partitions=3"]
    ov.append("split=given")  # the split columns of both files
    build(spark, "generic", str(d), str(out), parse_overrides(ov), quiet=True)
    m = manifest(out)
    assert m["counts"]["groups"] == 8 and m["counts"]["users"] == 30
    assert m["counts"]["interactions.test"] == 30
    assert table(out, "groups/members").num_rows == len(set(mem[1:]))
    g = table(out, "groups/items").to_pylist()
    assert len(g) == 40 and sum(r["split"] == "test" for r in g) == 8
    assert m["tables"]["graphs/group_user"]["rows"] == 8
    assert "derived" not in m["filters"]["graphs"]["group_item"]


def _mini_mafengwo(d: Path, members_name: str) -> Path:
    d.mkdir()
    (d / "userRatingTrain.txt").write_text(
        "".join(f"{u} {(u + k) % 20}\n" for u in range(25) for k in range(4))
    )
    (d / "userRatingTest.txt").write_text("".join(f"{u} {(u + 9) % 20}\n" for u in range(25)))
    (d / "groupRatingTrain.txt").write_text("".join(f"{g} {g % 20}\n" for g in range(6)))
    (d / "groupRatingTest.txt").write_text("".join(f"{g} {(g + 3) % 20}\n" for g in range(6)))
    (d / members_name).write_text("".join(f"{g} {g},{g + 6},{g + 12}\n" for g in range(6)))
    return d


def test_renamed_file_through_preset(spark, tmp_path, capfd):
    d = _mini_mafengwo(tmp_path / "maf", "members_of_groups.txt")
    args = ["--source", "mafengwo", "--input", str(d), "--out", str(tmp_path / "x")]
    err = _cli_error(capfd, args)
    assert "missing role members" in err and "members=groupMember.txt" in err
    assert "members_of_groups.txt" in err and "--input-file" in err
    err = _cli_error(capfd, [*args, "--input-file", "memberz=foo"])
    assert "no role 'memberz'" in err and "members" in err
    out = tmp_path / "b"
    o = parse_overrides(["partitions=2"])
    o.input_files["members"] = str(d / "members_of_groups.txt")
    build(spark, "mafengwo", str(d), str(out), o, quiet=True)
    m = manifest(out)
    assert m["counts"]["groups"] == 6 and table(out, "groups/members").num_rows == 18


def test_missing_input_and_reject_threshold(spark, tmp_path, capfd):
    err = _cli_error(
        capfd,
        ["--source", "generic", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
    )
    assert "does not exist" in err
    d = tmp_path / "r"
    d.mkdir()
    rows = ["user,item,timestamp"] + [f"u{k % 5},i{k},{1_700_000_000 + k}" for k in range(20)]
    rows[3] = "u1,i3,not-a-time"
    (d / "a.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "b"
    err = _cli_error(capfd, ["--source", "generic", "--input", str(d), "--out", str(out)])
    assert "a.csv:4: timestamp: impossible value 'not-a-time'" in err
    assert f"{out}.rejected" in err and not out.exists()
    assert (Path(f"{out}.rejected")).is_dir()
    err = _cli_error(
        capfd, ["--source", "generic", "--input", str(d), "--out", str(out), "split=given"]
    )
    assert "split=given: the generic input has no split of its own" in err
