"""JD multi-behavior data as released with VCGAE, see ../shared/data/jd_vcgae/SOURCE.md.

``user item`` per line, 1-based ids, no timestamps. Training behaviors come from trn_pv,
trn_fav, trn_buy; validation and test purchases from vld_buy / tst_buy. The ``union`` file
is never read: it holds 1,332 pairs beyond the trn_* files, 35 of them valid/test purchases.
``auxiliary`` duplicates trn_pv + trn_fav.
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
    with_parts,
)
from spark_jobs.ingest.presets import PRESETS, one, resolve
from spark_jobs.options import BuildOptions


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    roles = PRESETS["jd_vcgae"]
    got = resolve(spark, "jd_vcgae", path, opts)
    files = [one(got, r.name) for r in roles]
    lines, empty = lines_of(spark, files)
    df = with_parts(lines, r"[ \t]+")
    beh = F.create_map(*[x for f, r in zip(files, roles) for x in (F.lit(f), F.lit(r.behavior))])
    spl = F.create_map(*[x for f, r in zip(files, roles) for x in (F.lit(f), F.lit(r.split))])
    c = roles[0].columns
    cols = {
        "user": part(c["user"]),
        "item": part(c["item"]),
        "behavior": beh[F.col("source_file")],
        "ts": F.lit(None).cast("long"),
        "split": spl[F.col("source_file")],
        "ord": file_index_ord(files),
        "pos": F.lit(0),
    }
    checks = [field_count_check(2, 2)]
    checks += id_checks(part(0), "user", numeric=True, min_id=1)
    checks += id_checks(part(1), "item", numeric=True, min_id=1)
    return RawData(
        events=finish(df, cols, checks),
        behaviors=["pv", "fav", "buy"],
        default_split="given",
        has_given_split=True,
        empty_files=empty,
        notes={"ignored": "union (leaks valid/test pairs), auxiliary (= trn_pv + trn_fav)"},
    )
