"""Good rows -> deduplicated, filtered events with contiguous integer ids.

Order of work: dedup, minimum-activity and k-core filters, then ids (so an id map holds
only what survives), then the events are rewritten with int64 ids and int8 behaviors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.lines import dense_index
from spark_jobs.options import BuildOptions


@dataclass
class Prepared:
    """Indexed data. events: user, item, behavior (int8), ts, split (given only), ord, pos."""

    events: DataFrame
    ids: dict[str, DataFrame]  # users/items/groups: raw_id, idx
    members: DataFrame | None  # group, user
    group_items: DataFrame | None  # group, item, ts, split, ord, pos
    filters: dict[str, Any] = field(default_factory=dict)


def _dedup(events: DataFrame, keys: list[str]) -> DataFrame:
    """Keep the earliest row of each key (ts, then file order): repeats carry no new pair."""
    w = Window.partitionBy(*keys).orderBy(F.col("ts").asc_nulls_last(), F.col("ord"), F.col("pos"))
    return events.withColumn("_rn", F.row_number().over(w)).filter("_rn = 1").drop("_rn")


def _filter_users_items(
    events: DataFrame, opts: BuildOptions, min_user: int, stats: dict[str, Any]
) -> DataFrame:
    """Minimum user activity and iterative k-core (until nothing changes or max_iter)."""
    ku = max(opts.kcore_user, min_user)
    ki = opts.kcore_item
    if ku <= 0 and ki <= 0:
        return events
    before = events.count()
    n = before
    for it in range(max(1, opts.kcore_max_iter)):
        if ku > 0:
            keep = events.groupBy("user").count().filter(F.col("count") >= ku).select("user")
            events = events.join(keep, "user", "left_semi")
        if ki > 0:
            keep = events.groupBy("item").count().filter(F.col("count") >= ki).select("item")
            events = events.join(keep, "item", "left_semi")
        # Cut the lineage each round; otherwise the plan grows with every iteration.
        events = events.localCheckpoint(eager=True)
        m = events.count()
        stats["kcore_iterations"] = it + 1
        if m == n or ki <= 0 or ku <= 0:  # a one-sided filter converges in one round
            break
        n = m
    stats["filtered_rows"] = before - events.count()
    return events


# Up to this many distinct ids are indexed on the driver (one small collect); above it the
# distributed range-sort in ``dense_index`` takes over.
DRIVER_INDEX_MAX = 2_000_000


def _sort_key(raw_id: str) -> tuple[int, int, str]:
    return (0, int(raw_id), "") if raw_id.isascii() and raw_id.isdigit() else (1, 0, raw_id)


def _id_map(raw: DataFrame) -> DataFrame:
    """raw_id -> idx, numeric ids in numeric order first (so 1-based ids map to id - 1)."""
    d = raw.distinct().filter(F.col("raw_id").isNotNull())
    got = [r[0] for r in d.limit(DRIVER_INDEX_MAX + 1).collect()]
    if len(got) <= DRIVER_INDEX_MAX:
        got.sort(key=_sort_key)
        spark = raw.sparkSession
        return spark.createDataFrame(list(zip(got, range(len(got)))), "raw_id string, idx long")
    return dense_index(
        d,
        [
            F.when(
                F.col("raw_id").rlike("^[0-9]+$"), F.col("raw_id").try_cast("decimal(38,0)")
            ).asc_nulls_last(),
            F.col("raw_id"),
        ],
        "idx",
    ).select("raw_id", "idx")


def prepare(
    events: DataFrame,
    members: DataFrame | None,
    group_items: DataFrame | None,
    behaviors: list[str],
    opts: BuildOptions,
    *,
    min_user: int = 0,
    known_rows: int | None = None,
) -> Prepared:
    """Dedup, filter and index good rows (string ids in, int64 ids out)."""
    stats: dict[str, Any] = {
        "dedup": opts.dedup,
        "kcore_user": opts.kcore_user,
        "kcore_item": opts.kcore_item,
        "min_user_interactions": max(min_user, opts.min_user_interactions),
    }
    if opts.dedup:
        n0 = known_rows if known_rows is not None else events.count()
        events = _dedup(events, ["user", "item", "behavior"]).localCheckpoint(eager=True)
        stats["dedup_removed"] = n0 - events.count()
        if group_items is not None:
            group_items = _dedup(group_items, ["group", "item"])
        if members is not None:
            members = members.distinct()
    events = _filter_users_items(events, opts, max(min_user, opts.min_user_interactions), stats)
    if "filtered_rows" in stats:
        # Filters drop users/items; group data keeps only what the events kept.
        if members is not None:
            kept_u = events.select("user").distinct()
            members = members.join(kept_u, "user", "left_semi")
        if group_items is not None:
            kept_i = events.select("item").distinct()
            group_items = group_items.join(kept_i, "item", "left_semi")

    users = events.select(F.col("user").alias("raw_id"))
    items = events.select(F.col("item").alias("raw_id"))
    groups = None
    if members is not None:
        users = users.union(members.select(F.col("user").alias("raw_id")))
        groups = members.select(F.col("group").alias("raw_id"))
    if group_items is not None:
        items = items.union(group_items.select(F.col("item").alias("raw_id")))
        g2 = group_items.select(F.col("group").alias("raw_id"))
        groups = g2 if groups is None else groups.union(g2)
    ids = {"users": _id_map(users), "items": _id_map(items)}
    if groups is not None:
        ids["groups"] = _id_map(groups)

    def idx(df: DataFrame, col: str, kind: str) -> DataFrame:
        m = ids[kind].withColumnRenamed("raw_id", col).withColumnRenamed("idx", "_i")
        return df.join(m, col).drop(col).withColumnRenamed("_i", col)

    bmap = F.create_map(*[x for i, b in enumerate(behaviors) for x in (F.lit(b), F.lit(i))])
    ev = idx(idx(events, "user", "users"), "item", "items")
    ev = ev.withColumn("behavior", bmap[F.col("behavior")].cast("byte"))
    if members is not None:
        members = idx(idx(members, "group", "groups"), "user", "users")
    if group_items is not None:
        group_items = idx(idx(group_items, "group", "groups"), "item", "items")
    return Prepared(events=ev, ids=ids, members=members, group_items=group_items, filters=stats)
