"""Shared parsing pieces for the readers: field splitting and per-row validation.

A reader turns each input line into one row with the parsed columns plus ``reason``: null
for a good row, else a message naming the field (``user: non-numeric id 'x1'``). The build
splits good rows from the ``_rejected`` table, so nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.errors import MissingInputError, UserError
from spark_jobs.lines import read_lines
from spark_jobs.store import Store

# Timestamps outside [1970, 2100) are impossible for interaction logs.
MAX_TS = 4_102_444_800
ID_RE = r"^[0-9]+$"


@dataclass
class RawData:
    """What a reader hands to the build; every frame carries ``reason`` and reject columns.

    events:      user, item, behavior (strings), ts (long, nullable), split (string, nullable:
                 only for the ``given`` protocol), ord (long), pos (int): ties in ts are
                 broken by (ord, pos), which the reader sets to the file's own order.
    members:     group, user (strings)
    group_items: group, item (strings), ts, split, ord, pos
    """

    events: DataFrame
    behaviors: list[str]
    default_split: str
    members: DataFrame | None = None
    group_items: DataFrame | None = None
    has_given_split: bool = False
    empty_files: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def lines_of(spark: SparkSession, files: list[str]) -> tuple[DataFrame, list[str]]:
    """Lines of the non-empty files, and the list of empty files (recorded as rejects)."""
    store = Store(spark, files[0])
    for f in files:
        if not store.is_file(f):
            raise MissingInputError(f"{f}: expected input file is missing")
    empty = [f for f in files if store.size(f) == 0]
    full = [f for f in files if f not in empty]
    if not full:
        raise UserError(f"{', '.join(files)}: every input file is empty")
    return read_lines(spark, full), empty


def with_parts(lines: DataFrame, sep_regex: str) -> DataFrame:
    """Add ``parts`` (the trimmed line split on ``sep_regex``) and ``nf`` (its size)."""
    v = F.trim(F.col("value"))
    return lines.withColumn(
        "parts", F.when(v == "", F.array()).otherwise(F.split(v, sep_regex))
    ).withColumn("nf", F.size("parts"))


def part(i: int) -> Column:
    return F.trim(F.get(F.col("parts"), i))


def first_reason(checks: list[tuple[Column, Column | str]]) -> Column:
    """The message of the first failing check (``cond`` true means bad), else null."""
    out: Column = F.lit(None).cast("string")
    for cond, msg in reversed(checks):
        m = F.lit(msg) if isinstance(msg, str) else msg
        out = F.when(cond, m).otherwise(out)
    return out


def field_count_check(lo: int, hi: int, what: str = "fields") -> tuple[Column, Column]:
    want = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return (
        (F.col("nf") < lo) | (F.col("nf") > hi),
        F.when(F.col("nf") == 0, F.lit("blank line")).otherwise(
            F.concat(F.lit(f"expected {want} {what}, got "), F.col("nf").cast("string"))
        ),
    )


def id_checks(col: Column, name: str, *, numeric: bool, min_id: int = 0) -> list:
    """Checks for one id field: present, and (numeric) an integer >= min_id."""
    checks: list = [(col.isNull() | (col == ""), f"{name}: missing id")]
    if numeric:
        checks.append(
            (~col.rlike(ID_RE), F.concat(F.lit(f"{name}: non-numeric id '"), col, F.lit("'")))
        )
        if min_id > 0:
            checks.append(
                (
                    col.cast("long") < min_id,
                    F.concat(
                        F.lit(f"{name}: id "), col, F.lit(f" < {min_id} in a {min_id}-based file")
                    ),
                )
            )
    return checks


def ts_value(col: Column, unit: str = "s") -> Column:
    """Seconds as int64 from an int or float string (``1287503727.0``); null if unparsable."""
    d = col.try_cast("double")
    if unit == "ms":
        d = d / 1000.0
    return F.floor(d).cast("long")


def ts_checks(raw: Column, value: Column, name: str = "timestamp") -> list:
    bad = value.isNull() | (value < 0) | (value >= MAX_TS)
    return [
        (raw.isNull() | (raw == ""), f"{name}: missing"),
        (bad, F.concat(F.lit(f"{name}: impossible value '"), raw, F.lit("'"))),
    ]


def behavior_check(col: Column, allowed: list[str]) -> list:
    if not allowed:
        return [(col.isNull() | (col == ""), "behavior: missing")]
    return [
        (
            ~col.isin(*allowed) | col.isNull(),
            F.concat(
                F.lit("behavior: unknown '"),
                F.coalesce(col, F.lit("")),
                F.lit(f"' (known: {','.join(allowed)})"),
            ),
        )
    ]


def file_index_ord(files: list[str]) -> Column:
    """``ord`` = (index of the file in ``files``) << 40 | line: file order, then line order."""
    m = F.create_map(*[x for i, f in enumerate(files) for x in (F.lit(f), F.lit(i))])
    return (F.coalesce(m[F.col("source_file")], F.lit(0)).cast("long") * (1 << 40)) + F.col("line")


def finish(df: DataFrame, cols: dict[str, Column], checks: list) -> DataFrame:
    """Select the output columns plus ``reason`` and the reject columns."""
    return df.select(
        *[c.alias(k) for k, c in cols.items()],
        first_reason(checks).alias("reason"),
        "source_file",
        "line",
        F.col("value").alias("raw"),
    )
