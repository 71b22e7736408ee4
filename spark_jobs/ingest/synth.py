"""``python -m distrec.synth`` output (the cross-team contract).

DIR/meta.json (kind, behaviors ordered target last, ...), DIR/events/part-*.csv with header
``user_id,item_id,behavior,timestamp``; for kind=group also DIR/groups/members-*.csv
(``group_id,user_id``) and DIR/groups/events-*.csv (``group_id,item_id,timestamp``).
"""

from __future__ import annotations

import glob
import json
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

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
from spark_jobs.options import BuildOptions

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
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path}: missing; is {path} distrec.synth output?") from None
    behaviors = list(meta.get("behaviors") or [])
    if not behaviors:
        raise ValueError(f"{meta_path}: field 'behaviors' is empty")
    files = sorted(glob.glob(os.path.join(path, "events", "part-*.csv")))
    if not files:
        raise FileNotFoundError(f"{path}/events: no part-*.csv files")
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
        mf = sorted(glob.glob(os.path.join(path, "groups", "members-*.csv")))
        gf = sorted(glob.glob(os.path.join(path, "groups", "events-*.csv")))
        if not mf:
            raise FileNotFoundError(f"{path}/groups: no members-*.csv for a kind=group data set")
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
