"""``python -m distrec.synth`` output (the cross-team contract).

DIR/meta.json (kind, behaviors ordered target last, ...), DIR/events/part-*.csv with header
``user_id,item_id,behavior,timestamp``; for kind=group also DIR/groups/members-*.csv
(``group_id,user_id``) and DIR/groups/events-*.csv (``group_id,item_id,timestamp``).
"""

from __future__ import annotations

import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.errors import MissingInputError, UserError
from spark_jobs.ingest.common import (
    RawData,
    behavior_check,
    field_count_check,
    file_index_ord,
    finish,
    id_checks,
    lines_of,
    part,
    ts_checks,
    ts_value,
    with_parts,
)
from spark_jobs.ingest.presets import resolve
from spark_jobs.options import BuildOptions
from spark_jobs.store import Store

DEFAULT_SPLIT = {
    "multibehavior": "random_per_user",
    "group": "random_per_user",
    "sequence": "user_holdout",
}


def _csv(spark: SparkSession, files: list[str]) -> tuple[DataFrame, list[str]]:
    lines, empty = lines_of(spark, files)
    lines = lines.filter(F.col("line") > 1)  # header of every part file
    return with_parts(lines, ","), empty


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    got = resolve(spark, "synth", path, opts)
    meta_path = got["meta"][0]
    try:
        meta = json.loads(Store(spark, meta_path).read_text(meta_path))
    except json.JSONDecodeError as e:
        raise UserError(f"{meta_path}: not valid JSON ({e})") from None
    behaviors = list(meta.get("behaviors") or [])
    if not behaviors:
        raise UserError(f"{meta_path}: field 'behaviors' is empty")
    files = got["events"]
    df, empty = _csv(spark, files)
    ts = ts_value(part(3))
    cols = {
        "user": part(0),
        "item": part(1),
        "behavior": part(2),
        "ts": ts,
        "split": F.lit(None).cast("string"),
        "ord": file_index_ord(files),
        "pos": F.lit(0),
    }
    checks = [field_count_check(4, 4)]
    checks += id_checks(part(0), "user", numeric=False) + id_checks(part(1), "item", numeric=False)
    checks += behavior_check(part(2), behaviors) + ts_checks(part(3), ts)
    events = finish(df, cols, checks)
    members = group_items = None
    kind = meta.get("kind", "multibehavior")
    if kind == "group":
        mf = got.get("members", [])
        gf = got.get("group_items", [])
        if not mf:
            raise MissingInputError(
                f"{path}: no groups/members-*.csv (role members) for a kind=group data set"
            )
        m, e2 = _csv(spark, mf)
        members = finish(
            m,
            {"group": part(0), "user": part(1)},
            [field_count_check(2, 2)]
            + id_checks(part(0), "group", numeric=False)
            + id_checks(part(1), "user", numeric=False),
        )
        empty += e2
        if gf:
            g, e3 = _csv(spark, gf)
            gts = ts_value(part(2))
            group_items = finish(
                g,
                {
                    "group": part(0),
                    "item": part(1),
                    "ts": gts,
                    "split": F.lit(None).cast("string"),
                    "ord": file_index_ord(gf),
                    "pos": F.lit(0),
                },
                [field_count_check(3, 3)]
                + id_checks(part(0), "group", numeric=False)
                + id_checks(part(1), "item", numeric=False)
                + ts_checks(part(2), gts),
            )
            empty += e3
    return RawData(
        events=events,
        behaviors=behaviors,
        default_split=DEFAULT_SPLIT.get(kind, "random_per_user"),
        members=members,
        group_items=group_items,
        empty_files=empty,
        notes={"kind": kind, "seed": str(meta.get("seed"))},
    )
