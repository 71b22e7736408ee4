"""Generic event logs: CSV / TSV / whitespace text / JSON Lines / Parquet + a column mapping.

Options (``k=v``): ``format=csv|tsv|text|json|parquet``, ``sep=,``, ``header=true``,
``col.user=<name or 0-based index>``, ``col.item=...``, ``col.behavior=...`` (optional: one
behavior called ``interact``), ``col.timestamp=...`` (optional), ``col.split=...`` (optional,
enables ``split=given``), ``behaviors=view,cart,buy`` (ordered, target last; rows with another
behavior are rejected), ``ts_unit=s|ms``, ``numeric_ids=true``.
"""

from __future__ import annotations

import json

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.ingest.common import (
    RawData,
    behavior_check,
    field_count_check,
    file_index_ord,
    finish,
    id_checks,
    lines_of,
    ts_checks,
    ts_value,
    with_parts,
)
from spark_jobs.lines import list_files
from spark_jobs.options import BuildOptions

DEFAULT_BEHAVIOR = "interact"
FIELDS = ("user", "item", "behavior", "timestamp", "split")


def _header_names(first_line: str, sep: str) -> list[str]:
    import re

    return [c.strip() for c in re.split(sep, first_line.strip())]


def events_from_lines(
    spark: SparkSession, files: list[str], opts: BuildOptions, sep_regex: str
) -> tuple[DataFrame, list[str], dict[str, Column], int]:
    """Delimited text -> (parts frame, empty files, field -> column expr, field count)."""
    lines, empty = lines_of(spark, files)
    mapping = dict(opts.columns)
    width = None
    if opts.header:
        first = next(f for f in files if f not in empty)
        with open(first, encoding="utf-8", errors="replace") as fh:
            names = _header_names(fh.readline().rstrip("\r\n"), sep_regex)
        width = len(names)
        for k in FIELDS:
            mapping.setdefault(
                k, k if k in names else {"user": "user_id", "item": "item_id"}.get(k, k)
            )
        idx = {k: names.index(v) for k, v in mapping.items() if v in names}
        lines = lines.filter(F.col("line") > 1)
    else:
        idx = {k: int(v) for k, v in mapping.items()}
    df = with_parts(lines, sep_regex)
    if width is None:
        width = max(idx.values()) + 1 if idx else 2
    cols = {k: F.trim(F.get(F.col("parts"), i)) for k, i in idx.items()}
    return df, empty, cols, width


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    fmt = opts.format
    empty: list[str] = []
    if fmt == "parquet":
        files = list_files(path, (".parquet",))
        raw = spark.read.parquet(*files)
        mapping = {k: opts.columns.get(k, k) for k in FIELDS}
        df = raw.select(
            F.regexp_replace(F.input_file_name(), "^file:(//)?", "").alias("source_file"),
            F.lit(None).cast("long").alias("line"),
            F.to_json(F.struct(*raw.columns)).alias("value"),
            *[
                F.col(v).cast("string").alias(f"_{k}")
                for k, v in mapping.items()
                if v in raw.columns
            ],
        )
        cols = {k: F.col(f"_{k}") for k in mapping if f"_{k}" in df.columns}
        count_check = None
        df = df.withColumn("line", F.monotonically_increasing_id())
    elif fmt == "json":
        files = list_files(path)
        lines, empty = lines_of(spark, files)
        mapping = {k: opts.columns.get(k, k) for k in FIELDS}
        schema = "struct<" + ",".join(f"`{v}`:string" for v in mapping.values()) + ">"
        df = lines.withColumn("_j", F.from_json("value", schema, {"mode": "PERMISSIVE"}))
        cols = {k: F.col("_j").getField(v) for k, v in mapping.items()}
        # from_json yields a struct of nulls for malformed text; parse_json tells them apart.
        count_check = (F.try_parse_json("value").isNull(), F.lit("invalid JSON"))
    else:
        sep = {"tsv": r"\t", "text": r"\s+"}.get(fmt, None)
        if sep is None:
            if fmt != "csv":
                raise ValueError(f"generic: unknown format {fmt!r} (csv, tsv, text, json, parquet)")
            import re

            sep = re.escape(opts.sep) if opts.sep != "\t" else r"\t"
        files = list_files(path)
        df, empty, cols, width = events_from_lines(spark, files, opts, sep)
        count_check = field_count_check(width, width)
    if "user" not in cols or "item" not in cols:
        raise ValueError(
            f"generic reader: map the user and item columns, e.g. col.user=uid col.item=iid "
            f"(got {sorted(cols)})"
        )
    behaviors = list(opts.behaviors)
    beh = cols.get("behavior", F.lit(DEFAULT_BEHAVIOR))
    if not behaviors:
        if "behavior" in cols:
            found = [r[0] for r in df.select(beh).distinct().collect() if r[0]]
            behaviors = sorted(found)
        else:
            behaviors = [DEFAULT_BEHAVIOR]
    ts = (
        ts_value(cols["timestamp"], opts.ts_unit)
        if "timestamp" in cols
        else F.lit(None).cast("long")
    )
    checks: list = [count_check] if count_check is not None else []
    checks += id_checks(cols["user"], "user", numeric=opts.numeric_ids)
    checks += id_checks(cols["item"], "item", numeric=opts.numeric_ids)
    checks += behavior_check(beh, behaviors)
    if "timestamp" in cols:
        checks += ts_checks(cols["timestamp"], ts)
    split = cols.get("split", F.lit(None).cast("string"))
    if "split" in cols:
        checks.append(
            (
                ~split.isin(*["train", "valid", "test"]),
                F.concat(F.lit("split: unknown '"), F.coalesce(split, F.lit("")), F.lit("'")),
            )
        )
    out_cols = {
        "user": cols["user"],
        "item": cols["item"],
        "behavior": beh,
        "ts": ts,
        "split": split,
        "ord": file_index_ord(files) if fmt != "parquet" else F.col("line"),
        "pos": F.lit(0),
    }
    return RawData(
        events=finish(df, out_cols, checks),
        behaviors=behaviors,
        default_split="given" if "split" in cols else "random_per_user",
        has_given_split="split" in cols,
        empty_files=empty,
        notes={"format": fmt, "columns": json.dumps(opts.columns)},
    )
