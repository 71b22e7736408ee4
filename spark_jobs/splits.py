"""Split protocols (``split=<name>``) over indexed events.

Every protocol is deterministic given ``seed``: random choices come from
``xxhash64(seed, ids)``, never from partition-dependent RNG state, so a rerun on another
cluster size gives the same bundle. Chronological order is (ts, ord, pos): ties in ts keep
the source's own order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.lines import dense_index
from spark_jobs.options import BuildOptions


@dataclass
class SplitResult:
    interactions: DataFrame  # user, item, behavior, ts, ord, pos, split
    group_items: DataFrame | None  # group, item, split
    eval_rows: DataFrame | None  # EVAL_ROWS columns + split
    params: dict[str, Any] = field(default_factory=dict)
    held_out_users: DataFrame | None = None  # user, split (user-level protocols)


def _hash_key(seed: int, *cols: str) -> Column:
    return F.xxhash64(F.lit(seed), *[F.col(c) for c in cols])


def _chrono() -> list[Column]:
    return [F.coalesce(F.col("ts"), F.lit(0)), F.col("ord"), F.col("pos")]


def _random_per_key(df: DataFrame, key: str, other: str, opts: BuildOptions) -> DataFrame:
    """Per ``key`` (user or group): a seeded shuffle; the first ~n*test rows are test, the
    next ~n*valid valid, the rest train. A key always keeps at least one training row.
    """
    w = Window.partitionBy(key).orderBy(_hash_key(opts.seed, key, other), F.col(other))
    n = F.count("*").over(Window.partitionBy(key))
    r = F.row_number().over(w) - 1
    df = df.withColumn("_n", n).withColumn("_r", r)
    # Randomised rounding (a seeded per-key uniform u): E[n_test] = n * test_ratio exactly,
    # so keys with 2-7 rows (IGRec's groups) still contribute held-out pairs in proportion.
    u1 = F.pmod(_hash_key(opts.seed + 1, key), F.lit(1_000_003)) / 1_000_003.0
    u2 = F.pmod(_hash_key(opts.seed + 2, key), F.lit(1_000_003)) / 1_000_003.0
    n_test = F.least(F.floor(F.col("_n") * opts.test_ratio + u1), F.col("_n") - 1)
    n_valid = F.least(F.floor(F.col("_n") * opts.valid_ratio + u2), F.col("_n") - 1 - n_test)
    split = (
        F.when(F.col("_r") < n_test, "test")
        .when(F.col("_r") < n_test + n_valid, "valid")
        .otherwise("train")
    )
    return df.withColumn("split", split).drop("_n", "_r")


def _leave_one_out(df: DataFrame) -> DataFrame:
    w = Window.partitionBy("user").orderBy(*[c.desc() for c in _chrono()])
    df = df.withColumn("_r", F.row_number().over(w)).withColumn(
        "_n", F.count("*").over(Window.partitionBy("user"))
    )
    split = (
        F.when((F.col("_r") == 1) & (F.col("_n") >= 2), "test")
        .when((F.col("_r") == 2) & (F.col("_n") >= 3), "valid")
        .otherwise("train")
    )
    return df.withColumn("split", split).drop("_r", "_n")


def user_split(users: DataFrame, opts: BuildOptions) -> DataFrame:
    """Users 8:1:1 (by default) in a seeded order: columns user, split. Exact counts."""
    n = users.count()
    n_test = int(n * opts.test_ratio + 0.5)
    n_valid = int(n * opts.valid_ratio + 0.5)
    ranked = dense_index(users, [_hash_key(opts.seed, "user"), F.col("user")], "_r")
    split = (
        F.when(F.col("_r") < n_test, "test")
        .when(F.col("_r") < n_test + n_valid, "valid")
        .otherwise("train")
    )
    return ranked.select("user", split.alias("split"))


def user_sequences(df: DataFrame) -> DataFrame:
    """Per user: ``items`` and ``ts`` arrays in chronological order (ties: source order)."""
    s = df.groupBy("user").agg(
        F.sort_array(
            F.collect_list(
                F.struct(F.coalesce("ts", F.lit(0)).alias("k"), "ord", "pos", "item", "ts")
            )
        ).alias("_s")
    )
    return s.select(
        "user",
        F.col("_s.item").alias("items"),
        F.transform("_s", lambda x: x["ts"]).alias("ts"),
    )


def _user_holdout(
    target: DataFrame, other: DataFrame, opts: BuildOptions
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """ComiRec split: held-out users' first ``holdout_input_ratio`` is input, the rest targets."""
    us = user_split(target.select("user").distinct(), opts).localCheckpoint(eager=True)
    tr = target.join(us.filter("split = 'train'"), "user", "left_semi").withColumn(
        "split", F.lit("train")
    )
    seqs = user_sequences(target.join(us.filter("split != 'train'"), "user", "left_semi"))
    n = F.size("items")
    n_in = F.greatest(F.lit(1), F.floor(n * opts.holdout_input_ratio)).cast("int")
    rows = seqs.join(us, "user").select(
        "user",
        "split",
        F.slice("items", 1, n_in).alias("input"),
        F.slice("ts", 1, n_in).alias("input_ts"),
        F.slice("items", n_in + 1, n).alias("targets"),
        F.slice("ts", n_in + 1, n).alias("_tts"),
        F.array().cast("array<bigint>").alias("candidates"),
    )
    rows = rows.filter(F.size("targets") > 0)  # a 1-item user has nothing to predict
    held = rows.select(
        "user",
        "split",
        F.posexplode(F.arrays_zip("targets", "_tts")).alias("pos", "_z"),
    ).select(
        "user",
        F.col("_z.targets").alias("item"),
        F.lit(-1).cast("byte").alias("behavior"),
        F.col("_z._tts").alias("ts"),
        F.lit(0).cast("long").alias("ord"),
        "pos",
        "split",
    )
    train_other = other.join(us.filter("split = 'train'"), "user", "left_semi").withColumn(
        "split", F.lit("train")
    )
    return (
        tr.unionByName(train_other).unionByName(held, allowMissingColumns=True),
        rows.drop("_tts"),
        us,
    )


def split_events(
    events: DataFrame,
    group_items: DataFrame | None,
    protocol: str,
    target: int,
    opts: BuildOptions,
    num_items: int,
) -> SplitResult:
    """Assign train/valid/test; returns interactions, group items and (some protocols) eval rows."""
    params: dict[str, Any] = {"protocol": protocol, "seed": opts.seed}
    tgt = events.filter(F.col("behavior") == target)
    aux = events.filter(F.col("behavior") != target)
    eval_rows = None
    held = None
    if protocol == "given":
        if "split" not in events.columns:
            raise ValueError("split=given: this source has no split of its own")
        inter = events.withColumn("split", F.coalesce("split", F.lit("train")))
        gi = (
            None
            if group_items is None
            else group_items.withColumn("split", F.coalesce("split", F.lit("train")))
        )
        params["note"] = "the data set's own train/valid/test files"
    elif protocol == "random_per_user":
        base = tgt.drop("split")
        inter = _random_per_key(base, "user", "item", opts).unionByName(
            aux.drop("split").withColumn("split", F.lit("train"))
        )
        gi = (
            None
            if group_items is None
            else _random_per_key(group_items.drop("split"), "group", "item", opts)
        )
        params.update(valid=opts.valid_ratio, test=opts.test_ratio, groups="same rule per group")
    elif protocol == "leave_one_out":
        inter = _leave_one_out(tgt.drop("split")).unionByName(
            aux.drop("split").withColumn("split", F.lit("train"))
        )
        gi = None if group_items is None else group_items.withColumn("split", F.lit("train"))
        params["rule"] = "last target interaction test, second-to-last valid (chronological)"
    elif protocol in ("user_holdout", "chunks"):
        from spark_jobs.chunks import chunk_rows

        base = tgt.drop("split")
        if protocol == "user_holdout":
            inter, eval_rows, held = _user_holdout(base, aux.drop("split"), opts)
            params.update(
                valid=opts.valid_ratio,
                test=opts.test_ratio,
                input_ratio=opts.holdout_input_ratio,
                unit="users",
            )
        else:
            inter, eval_rows, held = chunk_rows(base, opts, num_items)
            params.update(
                valid=opts.valid_ratio,
                test=opts.test_ratio,
                chunk_size=opts.chunk_size,
                chunk_input=opts.chunk_input,
                negatives=opts.chunk_negatives,
                unit="users",
            )
        # held-out rows carry behavior -1 as a marker; they are target-behavior rows
        inter = inter.withColumn(
            "behavior",
            F.when(F.col("behavior") < 0, F.lit(target)).otherwise(F.col("behavior")).cast("byte"),
        )
        gi = None if group_items is None else group_items.withColumn("split", F.lit("train"))
    else:
        raise ValueError(
            f"unknown split protocol {protocol!r}; valid: given, random_per_user, "
            "user_holdout, chunks, leave_one_out"
        )
    if gi is not None:
        gi = gi.select("group", "item", "split")
    return SplitResult(inter, gi, eval_rows, params, held)
