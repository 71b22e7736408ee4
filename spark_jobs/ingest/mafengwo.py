"""MaFengWo-style group data (AGREE/SIGR/ConsRec layout), see ../shared/data/mafengwo/SOURCE.md.

Files: userRating{Train,Test}.txt ``user item [rating]``, groupRating{Train,Test}.txt
``group item [rating]``, groupMember.txt ``group u1,u2,...``. 0-based ids. A third rating
column (other data sets of the family, e.g. CAMRa2011) is accepted and ignored. The
``*Negative.txt`` files hold unfiltered negatives (they collide with positives) and
userFollow.txt social links are not part of the bundle.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
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
from spark_jobs.ingest.presets import one, resolve, role
from spark_jobs.options import BuildOptions

BEHAVIOR = role("mafengwo", "user_train").behavior


def _pairs(spark: SparkSession, files: dict[str, str], a: str, b: str) -> tuple[DataFrame, list]:
    lines, empty = lines_of(spark, list(files))
    df = with_parts(lines, r"[ \t,]+")
    split_map = F.create_map(*[x for f, s in files.items() for x in (F.lit(f), F.lit(s))])
    cols = {
        a: part(0),
        b: part(1),
        "ts": F.lit(None).cast("long"),
        "split": split_map[F.col("source_file")],
        "ord": file_index_ord(list(files)),
        "pos": F.lit(0),
    }
    checks = [field_count_check(2, 3)]
    checks += id_checks(part(0), a, numeric=True) + id_checks(part(1), b, numeric=True)
    return finish(df, cols, checks), empty


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    got = resolve(spark, "mafengwo", path, opts)

    def p(name: str) -> str:
        return one(got, name)

    def s(name: str) -> str:
        return role("mafengwo", name).split

    ui, e1 = _pairs(
        spark, {p("user_train"): s("user_train"), p("user_test"): s("user_test")}, "user", "item"
    )
    gi, e2 = _pairs(
        spark,
        {p("group_train"): s("group_train"), p("group_test"): s("group_test")},
        "group",
        "item",
    )
    ui = ui.withColumn("behavior", F.lit(BEHAVIOR))
    lines, e3 = lines_of(spark, [p("members")])
    # "g u1,u2,...": one row per member; a line with no members is rejected.
    df = with_parts(lines, r"[ \t]+")
    checks = [field_count_check(2, 2, "fields (group, member list)")]
    checks += id_checks(part(0), "group", numeric=True)
    members = df.withColumn("m", F.explode_outer(F.split(part(1), ",")))
    checks += id_checks(F.trim(F.col("m")), "member user", numeric=True)
    members = finish(members, {"group": part(0), "user": F.trim(F.col("m"))}, checks)
    return RawData(
        events=ui,
        behaviors=[BEHAVIOR],
        default_split="random_per_user",
        members=members,
        group_items=gi,
        has_given_split=True,
        empty_files=e1 + e2 + e3,
        notes={"ignored": "userFollow.txt, *Negative.txt (unfiltered negatives)"},
    )
