"""Per-user sequence files (TiCoSeRec layout), see ../shared/data/amazon_beauty/SOURCE.md.

``*_item_*.txt``: ``user i1 i2 ...`` (ascending time), ``*_time_*.txt``: ``user t1 t2 ...``,
line k of both files is the same user. 1-based ids. Timestamps are whole days, so ties are
common; upstream sorted with an unstable sort, and we keep the file's order (``pos``) as the
tie-break. A line whose user or length differs between the two files is rejected whole.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.ingest.common import (
    ID_RE,
    MAX_TS,
    RawData,
    first_reason,
    lines_of,
    with_parts,
)
from spark_jobs.ingest.presets import one, resolve
from spark_jobs.options import BuildOptions

BEHAVIOR = "review"


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    got = resolve(spark, "amazon_beauty", path, opts)
    item_f, time_f = one(got, "items"), one(got, "times")
    li, e1 = lines_of(spark, [item_f])
    lt, e2 = lines_of(spark, [time_f])
    a = with_parts(li, r"\s+").select(
        "line", "source_file", "value", F.col("parts").alias("ip"), F.col("nf").alias("inf")
    )
    b = with_parts(lt, r"\s+").select(
        "line",
        F.col("source_file").alias("tfile"),
        F.col("value").alias("tvalue"),
        F.col("parts").alias("tp"),
        F.col("nf").alias("tnf"),
    )
    j = a.join(b, "line", "full_outer")
    # One reason per line (the line is all-or-nothing: a sequence with a hole is not a sequence).
    not_int = F.exists(
        F.slice("ip", 1, F.greatest(F.col("inf"), F.lit(1))), lambda x: ~x.rlike(ID_RE)
    )
    bad_ts = F.exists(
        F.slice("tp", 2, F.greatest(F.col("tnf") - 1, F.lit(1))),
        lambda x: (
            x.try_cast("double").isNull()
            | (x.try_cast("double") < 0)
            | (x.try_cast("double") >= MAX_TS)
        ),
    )
    reason = first_reason(
        [
            (F.col("ip").isNull(), "line missing in the item file"),
            (F.col("tp").isNull(), "line missing in the time file"),
            (F.col("inf") < 2, "expected a user and at least 1 item"),
            (not_int, "item: non-numeric id in the line"),
            (F.get("ip", 0) == "0", "user: id 0 in a 1-based file"),
            (F.array_contains("ip", "0"), "item: id 0 in a 1-based file"),
            (F.get("ip", 0) != F.get("tp", 0), "time file: different user on this line"),
            (F.col("inf") != F.col("tnf"), "time file: different sequence length"),
            (bad_ts, "timestamp: impossible value in the line"),
        ]
    )
    j = j.withColumn("reason", reason)
    bad = j.filter(F.col("reason").isNotNull()).select(
        F.coalesce("source_file", "tfile").alias("source_file"),
        "line",
        "reason",
        F.coalesce("value", "tvalue").alias("raw"),
    )
    ok = j.filter(F.col("reason").isNull())
    ev = ok.select(
        "source_file",
        "line",
        F.get("ip", 0).alias("user"),
        F.posexplode(
            F.arrays_zip(F.slice("ip", 2, F.col("inf")), F.slice("tp", 2, F.col("tnf")))
        ).alias("pos", "z"),
    ).select(
        "user",
        F.col("z").getField("0").alias("item"),
        F.lit(BEHAVIOR).alias("behavior"),
        F.floor(F.col("z").getField("1").try_cast("double")).cast("long").alias("ts"),
        F.lit(None).cast("string").alias("split"),
        F.col("line").cast("long").alias("ord"),
        "pos",
        F.lit(None).cast("string").alias("reason"),
        "source_file",
        "line",
        F.lit("").alias("raw"),
    )
    bad_rows = bad.select(
        F.lit(None).cast("string").alias("user"),
        F.lit(None).cast("string").alias("item"),
        F.lit(None).cast("string").alias("behavior"),
        F.lit(None).cast("long").alias("ts"),
        F.lit(None).cast("string").alias("split"),
        F.lit(None).cast("long").alias("ord"),
        F.lit(0).alias("pos"),
        "reason",
        "source_file",
        "line",
        "raw",
    )
    return RawData(
        events=ev.unionByName(bad_rows),
        behaviors=[BEHAVIOR],
        default_split="user_holdout",
        empty_files=e1 + e2,
        notes={"ties": "same-day items keep the file's order", "rows_in": "events (not lines)"},
    )
