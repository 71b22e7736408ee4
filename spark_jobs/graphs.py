"""Graph tables (one row per source node: src, dst list, w list), from the training split only.

- ``ui.<b>`` / ``iu.<b>``: per-behavior bipartite adjacency with symmetric normalisation
  w = 1 / sqrt(deg_u * deg_i), degrees counted in that behavior's training graph.
- ``item_cooc``: DisMIR's confidence graph S_ij = co(i,j) / sum_j co(i,j) (i != j), co = number
  of users with both items, top-k per row after normalisation. Heavy users are capped: a user
  with more than ``cooc_max_items_per_user`` items contributes a seeded sample of that many,
  so the self-join emits at most cap^2 pairs per user instead of deg^2.
- ``group_user`` / ``user_group`` / ``group_item``: row-normalised (w = 1 / out-degree).
  Without group-item data, group_item is derived from the ``group_items_top`` items most
  often interacted with by a group's members (IGRec's rule).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def _rows(edges: DataFrame) -> DataFrame:
    """edges: src, dst, w -> src, dst list, w list (dst ascending)."""
    g = edges.groupBy("src").agg(F.sort_array(F.collect_list(F.struct("dst", "w"))).alias("_e"))
    return g.select(
        F.col("src").cast("long"),
        F.col("_e.dst").alias("dst"),
        F.transform("_e", lambda x: x["w"].cast("float")).alias("w"),
    )


def bipartite(pairs: DataFrame) -> tuple[DataFrame, DataFrame]:
    """pairs: user, item (distinct) -> (ui rows, iu rows) with 1/sqrt(deg_u deg_i)."""
    du = pairs.groupBy("user").agg(F.count("*").alias("du"))
    di = pairs.groupBy("item").agg(F.count("*").alias("di"))
    e = pairs.join(du, "user").join(di, "item")
    e = e.withColumn("w", 1.0 / F.sqrt(F.col("du").cast("double") * F.col("di")))
    ui = _rows(e.select(F.col("user").alias("src"), F.col("item").alias("dst"), "w"))
    iu = _rows(e.select(F.col("item").alias("src"), F.col("user").alias("dst"), "w"))
    return ui, iu


def row_normalised(edges: DataFrame) -> DataFrame:
    """edges: src, dst (distinct) -> rows with w = 1 / out-degree(src)."""
    d = edges.groupBy("src").agg(F.count("*").alias("_d"))
    e = edges.join(d, "src").withColumn("w", 1.0 / F.col("_d"))
    return _rows(e.select("src", "dst", "w"))


def capped_user_items(pairs: DataFrame, cap: int, seed: int) -> DataFrame:
    """pairs: user, item -> the same, keeping at most ``cap`` items per user (seeded sample)."""
    if cap <= 0:
        return pairs
    w = Window.partitionBy("user").orderBy(F.xxhash64(F.lit(seed), "user", "item"), "item")
    return pairs.withColumn("_r", F.row_number().over(w)).filter(F.col("_r") <= cap).drop("_r")


def item_cooc(pairs: DataFrame, *, topk: int, cap: int, seed: int) -> DataFrame:
    """pairs: user, item (distinct) -> item_cooc rows (S_ij, top-k by S desc then j asc)."""
    p = capped_user_items(pairs, cap, seed)
    a = p.select("user", F.col("item").alias("src"))
    b = p.select("user", F.col("item").alias("dst"))
    co = (
        a.join(b, "user")
        .filter(F.col("src") != F.col("dst"))
        .groupBy("src", "dst")
        .agg(F.count("*").alias("co"))
    )
    tot = co.groupBy("src").agg(F.sum("co").alias("_t"))
    s = co.join(tot, "src").withColumn("w", F.col("co") / F.col("_t"))
    if topk > 0:
        rk = Window.partitionBy("src").orderBy(F.col("co").desc(), F.col("dst"))
        s = s.withColumn("_r", F.row_number().over(rk)).filter(F.col("_r") <= topk)
    return _rows(s.select("src", "dst", "w"))


def derived_group_items(members: DataFrame, pairs: DataFrame, top: int) -> DataFrame:
    """members: group, user; pairs: user, item -> group, item: the members' top items.

    Ranked by the number of members who interacted with the item, ties by item id.
    """
    c = members.join(pairs, "user").groupBy("group", "item").agg(F.count("*").alias("_c"))
    rk = Window.partitionBy("group").orderBy(F.col("_c").desc(), F.col("item"))
    return (
        c.withColumn("_r", F.row_number().over(rk))
        .filter(F.col("_r") <= top)
        .select("group", "item")
    )
