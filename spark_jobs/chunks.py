"""MDGR's protocol: non-overlapping 100-item chunks, 50 input + 50 targets + 50 negatives.

Users (already filtered to >= chunk_size interactions) are split 8:1:1; every chunk of a
user becomes one eval row under that user's split (train chunks are MDGR's training
samples). A user's leftover tail (n mod chunk_size most recent items) stays in training
interactions only. Negatives: ``chunk_negatives`` distinct items the user never interacted
with, drawn by hashing (seed, user, chunk, probe) so they are reproducible.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.options import BuildOptions
from spark_jobs.splits import user_sequences, user_split


def _negatives(rows: DataFrame, seen: DataFrame, opts: BuildOptions, num_items: int) -> DataFrame:
    """rows: user, chunk, deg -> user, chunk, candidates (sorted by probe order)."""
    k = opts.chunk_negatives
    # Enough probes that k unseen items survive with overwhelming probability:
    # expected unseen share is (N - deg) / N; draw 2x what is needed plus slack.
    probes = F.ceil(
        F.lit(2.0 * k * num_items) / F.greatest(F.lit(1), F.lit(num_items) - F.col("deg")) + 20
    ).cast("int")
    cand = rows.select(
        "user", "chunk", F.explode(F.sequence(F.lit(0), probes - 1)).alias("probe")
    ).withColumn(
        "item",
        F.pmod(F.xxhash64(F.lit(opts.seed), "user", "chunk", "probe"), F.lit(num_items)),
    )
    cand = cand.join(seen, ["user", "item"], "left_anti")
    first = Window.partitionBy("user", "chunk", "item").orderBy("probe")
    cand = cand.withColumn("_f", F.row_number().over(first)).filter("_f = 1")
    rank = Window.partitionBy("user", "chunk").orderBy("probe")
    cand = cand.withColumn("_r", F.row_number().over(rank)).filter(F.col("_r") <= k)
    return (
        cand.groupBy("user", "chunk")
        .agg(F.sort_array(F.collect_list(F.struct("probe", "item"))).alias("_c"))
        .select("user", "chunk", F.col("_c.item").alias("candidates"))
    )


def chunk_rows(
    target: DataFrame, opts: BuildOptions, num_items: int
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Returns (interactions with split, eval rows with split, user -> split)."""
    size, n_in = opts.chunk_size, opts.chunk_input
    us = user_split(target.select("user").distinct(), opts).localCheckpoint(eager=True)
    seqs = user_sequences(target).withColumn("deg", F.size("items"))
    ch = seqs.select(
        "user",
        "deg",
        "items",
        "ts",
        F.explode(F.sequence(F.lit(0), F.floor(F.col("deg") / size).cast("int") - 1)).alias(
            "chunk"
        ),
    )
    start = F.col("chunk") * size + 1
    ch = ch.select(
        "user",
        "chunk",
        "deg",
        F.slice("items", start, n_in).alias("input"),
        F.slice("ts", start, n_in).alias("input_ts"),
        F.slice("items", start + n_in, size - n_in).alias("targets"),
        F.slice("ts", start + n_in, size - n_in).alias("_tts"),
    ).localCheckpoint(eager=True)
    seen = target.select("user", "item").distinct()
    negs = _negatives(ch.select("user", "chunk", "deg"), seen, opts, num_items)
    rows = ch.join(negs, ["user", "chunk"], "left").join(us, "user")
    rows = rows.withColumn("candidates", F.coalesce("candidates", F.array().cast("array<bigint>")))
    eval_rows = rows.select("user", "input", "input_ts", "targets", "candidates", "split", "chunk")
    held = (
        rows.filter("split != 'train'")
        .select(
            "user",
            "split",
            "chunk",
            F.posexplode(F.arrays_zip("targets", "_tts")).alias("pos", "_z"),
        )
        .select(
            "user",
            F.col("_z.targets").alias("item"),
            F.lit(-1).cast("byte").alias("behavior"),
            F.col("_z._tts").alias("ts"),
            F.col("chunk").cast("long").alias("ord"),
            "pos",
            "split",
        )
    )
    train = target.join(us.filter("split = 'train'"), "user", "left_semi").withColumn(
        "split", F.lit("train")
    )
    inter = train.unionByName(held, allowMissingColumns=True)
    return inter, eval_rows.drop("chunk"), us
