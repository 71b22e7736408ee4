"""Text input with (source file, line number), and contiguous indices, without Python UDFs.

Spark's text reader gives no line numbers. Within one input split rows keep file order, and
the splits of one file are read into partitions in offset order, so
``line = rows of that file in earlier partitions + position inside the partition``.
Both come from ``monotonically_increasing_id`` (partition id in the upper 31 bits) and a
small per-(partition, file) count table collected on the driver. Everything stays in the
JVM, which keeps 10^7-line inputs fast.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

_LOW_BITS = (1 << 33) - 1


def read_lines(spark: SparkSession, files: list[str]) -> DataFrame:
    """Rows ``source_file`` (path as given, ``file:`` stripped), ``line`` (1-based int64),
    ``value``. CR of CRLF line endings is stripped. Empty files give no rows (the caller
    counts them)."""
    if not files:
        raise FileNotFoundError("no input files")
    df = number_rows(spark.read.text(files).withColumn("source_file", F.input_file_name()))
    return df.select("source_file", "line", F.regexp_replace("value", "\r$", "").alias("value"))


def number_rows(df: DataFrame) -> DataFrame:
    """Add ``line``: the 1-based position of each row in its ``source_file`` (a file read by
    any Spark reader, before any shuffle), and strip ``file:`` from ``source_file``."""
    df = df.withColumn("_mid", F.monotonically_increasing_id())
    df = df.withColumn("_pid", F.shiftright("_mid", 33)).withColumn(
        "_pos", F.col("_mid").bitwiseAND(F.lit(_LOW_BITS))
    )
    counts = (
        df.groupBy("_pid", "source_file")
        .agg(F.count("*").alias("n"), F.min("_pos").alias("start"))
        .collect()
    )
    # For each file: rows in its earlier partitions (a file's partitions are in offset order,
    # see module docstring) minus the block's first position inside its partition.
    by_file: dict[str, list[tuple[int, int, int]]] = {}
    for r in counts:
        by_file.setdefault(r["source_file"], []).append(
            (int(r["_pid"]), int(r["n"]), int(r["start"]))
        )
    offsets = []
    for f, parts in by_file.items():
        acc = 0
        for pid, n, start in sorted(parts):
            offsets.append((pid, f, acc - start))
            acc += n
    spark = df.sparkSession
    off_df = spark.createDataFrame(
        offsets or [(0, "", 0)], "_pid long, source_file string, _off long"
    )
    df = df.join(F.broadcast(off_df), ["_pid", "source_file"])
    line = F.col("_off") + F.col("_pos") + F.lit(1)
    return (
        df.withColumn("line", line.cast("long"))
        .withColumn("source_file", F.regexp_replace("source_file", "^file:(//)?", ""))
        .drop("_mid", "_pid", "_pos", "_off")
    )


def dense_index(df: DataFrame, order: list[Column], name: str = "idx") -> DataFrame:
    """Add ``name``: contiguous int64 0..n-1 following a global sort on ``order``.

    Uses a range-partitioned sort and per-partition counts instead of a single-partition
    window, so it scales to hundreds of millions of ids.
    """
    s = df.orderBy(*order).withColumn("_mid", F.monotonically_increasing_id())
    s = s.withColumn("_pid", F.shiftright("_mid", 33)).withColumn(
        "_pos", F.col("_mid").bitwiseAND(F.lit(_LOW_BITS))
    )
    s = s.localCheckpoint(eager=True)  # pin the sort result: ids must not change on recompute
    counts = sorted(
        (int(r["_pid"]), int(r["n"]), int(r["m"]))
        for r in s.groupBy("_pid").agg(F.count("*").alias("n"), F.min("_pos").alias("m")).collect()
    )
    rows, acc = [], 0
    for pid, n, m in counts:
        rows.append((pid, acc - m))
        acc += n
    spark = df.sparkSession
    off = spark.createDataFrame(rows or [(0, 0)], "_pid long, _off long")
    s = s.join(F.broadcast(off), "_pid")
    return s.withColumn(name, (F.col("_pos") + F.col("_off")).cast("long")).drop(
        "_mid", "_pid", "_pos", "_off"
    )
