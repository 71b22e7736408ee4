"""The generic reader: column mapping over TSV, JSON Lines and Parquet, with rejects."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from spark_jobs.build_bundle import build
from spark_jobs.options import parse_overrides
from tests.spark.util import manifest, table

ROWS = [
    (f"{u}", f"{i}", "buy" if (u + i) % 3 == 0 else "view", 1_700_000_000 + 10 * i)
    for u in range(12)
    for i in range(u % 5, 40, 3)
]


def test_tsv_json_parquet_with_mapping(spark, tmp_path):
    tsv = tmp_path / "tsv"
    tsv.mkdir()
    lines = ["uid\tiid\tkind\twhen"] + ["\t".join(map(str, r)) for r in ROWS]
    lines.insert(5, "7\tnot-an-id\tview\t1700000000")  # line 6: bad id when numeric_ids
    lines.insert(9, "7\t3\tteleport\t1700000000")  # line 10: unknown behavior
    (tsv / "log.tsv").write_text("\n".join(lines) + "\n")
    common = [
        "col.user=uid",
        "col.item=iid",
        "col.behavior=kind",
        "col.timestamp=when",
        "behaviors=view,buy",
        "numeric_ids=true",
        "max_reject_share=0.5",
    ]
    out = tmp_path / "b1"
    s = build(
        spark, "generic", str(tsv), str(out), parse_overrides(["format=tsv", *common]), quiet=True
    )
    rej = {r["line"]: r["reason"] for r in table(out, "_rejected").to_pylist()}
    assert rej == {
        6: "item: non-numeric id 'not-an-id'",
        10: "behavior: unknown 'teleport' (known: view,buy)",
    }
    assert s["rows_in"] == len(ROWS) + 2
    m = manifest(out)
    assert m["behaviors"] == ["view", "buy"]
    assert m["counts"]["behavior.buy"] == sum(r[2] == "buy" for r in ROWS)

    js = tmp_path / "json"
    js.mkdir()
    recs = [json.dumps({"uid": u, "iid": i, "kind": b, "when": t}) for u, i, b, t in ROWS]
    recs.insert(2, "{not json")
    (js / "log.jsonl").write_text("\n".join(recs) + "\n")
    out2 = tmp_path / "b2"
    build(
        spark, "generic", str(js), str(out2), parse_overrides(["format=json", *common]), quiet=True
    )
    rej2 = table(out2, "_rejected").to_pylist()
    assert [(r["line"], r["reason"]) for r in rej2] == [(3, "invalid JSON")]

    pqd = tmp_path / "pq"
    pqd.mkdir()
    cols = list(zip(*ROWS))
    pq.write_table(
        pa.table(
            {
                "uid": list(cols[0]),
                "iid": list(cols[1]),
                "kind": list(cols[2]),
                "when": list(cols[3]),
            }
        ),
        pqd / "a.parquet",
    )
    out3 = tmp_path / "b3"
    build(
        spark,
        "generic",
        str(pqd),
        str(out3),
        parse_overrides(["format=parquet", *common]),
        quiet=True,
    )
    c1, c3 = manifest(out)["counts"], manifest(out3)["counts"]
    assert c1 == c3  # same rows, same seeded split, whatever the input format
