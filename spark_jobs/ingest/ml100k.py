"""MovieLens in RecBole atomic format (``.inter``), see ../shared/data/ml-100k/SOURCE.md.

TAB-separated with a ``name:type`` header, columns user_id, item_id, rating, timestamp;
1-based ids; rows in random order. Every rating is an implicit interaction. Timestamp ties
(75% of rows share a second with another) are broken by item id, as SOURCE.md suggests, so
the order does not depend on the file's row order.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.ingest.common import (
    RawData,
    field_count_check,
    finish,
    id_checks,
    lines_of,
    part,
    ts_checks,
    ts_value,
    with_parts,
)
from spark_jobs.ingest.presets import resolve, role
from spark_jobs.options import BuildOptions

BEHAVIOR = role("ml-100k", "interactions").behavior


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    files = resolve(spark, "ml-100k", path, opts)["interactions"]
    lines, empty = lines_of(spark, files)
    # The header is line 1 of each file; it is not data (and not a reject).
    lines = lines.filter(~((F.col("line") == 1) & F.col("value").contains(":token")))
    df = with_parts(lines, r"\t")
    ts = ts_value(part(3))
    cols = {
        "user": part(0),
        "item": part(1),
        "behavior": F.lit(BEHAVIOR),
        "ts": ts,
        "split": F.lit(None).cast("string"),
        "ord": part(1).try_cast("long"),
        "pos": F.lit(0),
    }
    checks = [field_count_check(4, 4)]
    checks += id_checks(part(0), "user", numeric=True, min_id=1)
    checks += id_checks(part(1), "item", numeric=True, min_id=1)
    checks.append(
        (
            part(2).try_cast("double").isNull(),
            F.concat(F.lit("rating: not a number '"), part(2), F.lit("'")),
        )
    )
    checks += ts_checks(part(3), ts)
    return RawData(
        events=finish(df, cols, checks),
        behaviors=[BEHAVIOR],
        default_split="chunks",
        empty_files=empty,
        notes={"implicit": "every rating (1-5) is an interaction", "ties": "by item id"},
    )
