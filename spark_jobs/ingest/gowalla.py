"""Gowalla check-ins (Liu et al. VLDB'17 layout), see ../shared/data/gowalla_1000u/SOURCE.md.

``Gowalla_checkins.txt``: ``user<TAB>poi<TAB>unix_time`` (float string), 0-based ids, rows
grouped by user and **newest first** within a user; the last line has no newline. ``ord``
is the negated line number, so ties in time keep chronological (reversed file) order.
``split=given`` reads the aggregated ``Gowalla_train/test.txt`` pairs instead (no time).
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.ingest.common import (
    RawData,
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
from spark_jobs.ingest.presets import one, resolve, role
from spark_jobs.options import BuildOptions

BEHAVIOR = role("gowalla_1000u", "checkins").behavior


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    got = resolve(spark, "gowalla_1000u", path, opts)
    if opts.split == "given":
        files = {one(got, r): role("gowalla_1000u", r).split for r in ("train", "test")}
        lines, empty = lines_of(spark, list(files))
        df = with_parts(lines, r"\t+| +")
        spl = F.create_map(*[x for f, s in files.items() for x in (F.lit(f), F.lit(s))])
        cols = {
            "user": part(0),
            "item": part(1),
            "behavior": F.lit(BEHAVIOR),
            "ts": F.lit(None).cast("long"),
            "split": spl[F.col("source_file")],
            "ord": file_index_ord(list(files)),
            "pos": F.lit(0),
        }
        checks = [field_count_check(2, 3)]
        checks += id_checks(part(0), "user", numeric=True)
        checks += id_checks(part(1), "item", numeric=True)
    else:
        files_l = [one(got, "checkins")]
        lines, empty = lines_of(spark, files_l)
        df = with_parts(lines, r"\t+| +")
        ts = ts_value(part(2))
        cols = {
            "user": part(0),
            "item": part(1),
            "behavior": F.lit(BEHAVIOR),
            "ts": ts,
            "split": F.lit(None).cast("string"),
            "ord": -file_index_ord(files_l),  # newest-first file: later line = earlier event
            "pos": F.lit(0),
        }
        checks = [field_count_check(3, 3)]
        checks += id_checks(part(0), "user", numeric=True)
        checks += id_checks(part(1), "item", numeric=True)
        checks += ts_checks(part(2), ts)
    return RawData(
        events=finish(df, cols, checks),
        behaviors=[BEHAVIOR],
        default_split="user_holdout",
        has_given_split=opts.split == "given",
        empty_files=empty,
        notes={
            "order": "check-ins reversed to chronological; repeat visits deduplicated "
            "unless dedup=false"
        },
    )
