"""Raw logs -> dataset bundle (layout in distrec/data/schema.py).

    python -m spark_jobs.build_bundle --source mafengwo --input ../shared/data/mafengwo \
        --out data/bundles/mafengwo [--master local[2]] [split=random_per_user seed=7 ...]

The same module runs under ``spark-submit spark_jobs/build_bundle.py ...`` on a cluster
(``--master`` omitted: spark-submit decides). Stages print progress on stderr; a summary
(rows in, rejected, rows out per table, time) is printed at the end.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from distrec.data.schema import (
    GRAPH_GROUP_ITEM,
    GRAPH_GROUP_USER,
    GRAPH_ITEM_COOC,
    GRAPH_USER_GROUP,
    SPLITS,
    Manifest,
    iu_graph,
    schema_for,
    ui_graph,
)
from spark_jobs import graphs
from spark_jobs.ingest import SOURCES, get_reader
from spark_jobs.options import BuildOptions, parse_overrides
from spark_jobs.prepare import prepare
from spark_jobs.report import Progress, check_share, reject_stats
from spark_jobs.splits import split_events, user_sequences
from spark_jobs.writer import BundleWriter

REJECT_COLS = ["source_file", "line", "reason", "raw"]


def _empty_split_dirs(w: BundleWriter, table: str, splits: tuple[str, ...] = SPLITS) -> None:
    """A split with no rows still gets a directory with an empty file, so readers need no
    special case for "absent"."""
    for s in splits:
        d = os.path.join(w.path(table), f"split={s}")
        if not glob.glob(os.path.join(d, "*.parquet")):
            os.makedirs(d, exist_ok=True)
            pq.write_table(schema_for(table).empty_table(), os.path.join(d, "part-empty.parquet"))


def _write_rejects(
    spark: SparkSession, w: BundleWriter, frames: dict[str, DataFrame], empty: list[str]
) -> None:
    bad = None
    for df in frames.values():
        b = df.filter(F.col("reason").isNotNull()).select(*REJECT_COLS)
        bad = b if bad is None else bad.unionByName(b)
    if empty:
        e = spark.createDataFrame(
            [(f, 0, "empty file", "") for f in empty],
            "source_file string, line long, reason string, raw string",
        )
        bad = e if bad is None else bad.unionByName(e)
    assert bad is not None
    w.write("_rejected", bad.coalesce(1))


def build(
    spark: SparkSession,
    source: str,
    input_dir: str,
    out: str,
    opts: BuildOptions | None = None,
    *,
    quiet: bool = False,
) -> dict[str, Any]:
    """Build one bundle; returns the summary dict (also printed by :func:`main`)."""
    opts = opts or BuildOptions()
    # Readers key per-file facts (behavior, split) by absolute path, as Spark reports them.
    input_dir = os.path.abspath(input_dir)
    log = Progress(quiet)
    read = get_reader(source)
    raw = read(spark, input_dir, opts)
    protocol = opts.split or raw.default_split
    name = opts.name or os.path.basename(os.path.abspath(out))
    log(f"source={source} input={input_dir} split={protocol}")
    w = BundleWriter(out, opts.row_group_mb)
    try:
        summary = _build(spark, raw, protocol, opts, w, log, source, name)
        w.commit()
    except BaseException:
        w.abort()
        raise
    summary["seconds"] = round(log.elapsed(), 2)
    log(f"done in {summary['seconds']} s -> {w.out}")
    return summary


def _build(spark, raw, protocol, opts, w, log, source, name) -> dict[str, Any]:  # noqa: ANN001
    frames = {"events": raw.events}
    if raw.members is not None:
        frames["groups/members"] = raw.members
    if raw.group_items is not None:
        frames["groups/items"] = raw.group_items
    log("validating input rows")
    rej = reject_stats(frames)
    rej["empty_files"] = raw.empty_files
    rej["rows"] += len(raw.empty_files)
    if raw.empty_files:
        rej["by_reason"]["empty file"] = len(raw.empty_files)
    samples = []
    if rej["rows"]:
        for df in frames.values():
            samples += (
                df.filter(F.col("reason").isNotNull()).select(*REJECT_COLS).limit(5).collect()
            )
    check_share(rej, opts.max_reject_share, samples[:5])
    log(f"read {rej['rows_in']} rows, rejected {rej['rows']} ({rej['share']:.3%})")
    _write_rejects(spark, w, frames, raw.empty_files)

    def good_events(df: DataFrame) -> DataFrame:
        return df.filter(F.col("reason").isNull()).drop(*REJECT_COLS)

    def good(df: DataFrame | None) -> DataFrame | None:
        if df is None:
            return None
        return df.filter(F.col("reason").isNull()).drop(*REJECT_COLS)

    min_user = opts.chunk_size if protocol == "chunks" else 0
    prep = prepare(
        good_events(raw.events),
        good(raw.members),
        good(raw.group_items),
        raw.behaviors,
        opts,
        min_user=min_user,
        known_rows=rej["per_input"]["events"]["rows_in"] - rej["per_input"]["events"]["rejected"],
    )
    log("indexing ids")
    for kind, df in prep.ids.items():
        w.write(f"ids/{kind}", df.coalesce(1), sort=["idx"])
    counts: dict[str, int] = {k: w.tables[f"ids/{k}"].rows for k in prep.ids}
    counts.setdefault("groups", 0)
    target = len(raw.behaviors) - 1

    log(f"splitting ({protocol})")
    sp = split_events(prep.events, prep.group_items, protocol, target, opts, counts["items"])
    # Materialise the split events once (with tie-break columns) and read them back: every
    # later table derives from them, and Parquet beats recomputing or caching in 2 GB.
    work = w.path("_work/events")
    sp.interactions.select("user", "item", "behavior", "ts", "ord", "pos", "split").write.mode(
        "overwrite"
    ).parquet(work)
    ev = spark.read.parquet(work)
    log("writing interactions")
    n_ev = ev.count()
    n_files = max(1, -(-n_ev // opts.rows_per_file))
    w.write("interactions", ev, partition_by="split", files=n_files, sort=["user", "item"])
    _empty_split_dirs(w, "interactions")
    for s, n in w.split_rows("interactions").items():
        counts[f"interactions.{s}"] = n
    # Per-behavior counts cover every kept interaction, including held-out users' input
    # prefixes that live only in eval/ for user-level protocols.
    for b, n in prep.events.groupBy("behavior").count().collect():
        if b is None:  # a reader bug, not bad input: fail loudly rather than drop rows
            raise RuntimeError(f"{n} interactions have no behavior after indexing")
        counts[f"behavior.{raw.behaviors[b]}"] = int(n)

    train = ev.filter("split = 'train'")
    tgt_train = train.filter(F.col("behavior") == target)
    log("writing sequences")
    n_seq_files = max(1, -(-counts["users"] // max(1, opts.rows_per_file // 50)))
    w.write("sequences", user_sequences(tgt_train), files=n_seq_files, sort=["user"])

    if sp.eval_rows is not None:
        log("writing eval rows")
        w.write(f"eval/{protocol}", sp.eval_rows, partition_by="split", sort=["user"])
        _empty_split_dirs(w, f"eval/{protocol}")

    log("building graphs")
    graph_notes: dict[str, str] = {}
    for bi, b in enumerate(raw.behaviors):
        pairs = train.filter(F.col("behavior") == bi).select("user", "item").distinct()
        ui, iu = graphs.bipartite(pairs)
        w.write_graph(ui_graph(b), ui, opts.graph_partitions)
        w.write_graph(iu_graph(b), iu, opts.graph_partitions)
    graph_notes["ui/iu"] = "1/sqrt(deg_u*deg_i), degrees within that behavior's training graph"
    tpairs = tgt_train.select("user", "item").distinct()
    w.write_graph(
        GRAPH_ITEM_COOC,
        graphs.item_cooc(
            tpairs, topk=opts.cooc_topk, cap=opts.cooc_max_items_per_user, seed=opts.seed
        ),
        opts.graph_partitions,
    )
    graph_notes[GRAPH_ITEM_COOC] = (
        f"S_ij=co/sum_j co over target-behavior training pairs, top {opts.cooc_topk} per row, "
        f"users capped at {opts.cooc_max_items_per_user} items (seeded sample)"
    )
    if prep.members is not None:
        log("writing group tables")
        mem = prep.members.select("group", "user").distinct()
        w.write("groups/members", mem.coalesce(1), sort=["group", "user"])
        w.write_graph(
            GRAPH_GROUP_USER,
            graphs.row_normalised(
                mem.select(F.col("group").alias("src"), F.col("user").alias("dst"))
            ),
            opts.graph_partitions,
        )
        w.write_graph(
            GRAPH_USER_GROUP,
            graphs.row_normalised(
                mem.select(F.col("user").alias("src"), F.col("group").alias("dst"))
            ),
            opts.graph_partitions,
        )
        if sp.group_items is not None:
            gi = sp.group_items
            w.write("groups/items", gi, partition_by="split", sort=["group", "item"])
            _empty_split_dirs(w, "groups/items")
            for s, n in w.split_rows("groups/items").items():
                counts[f"group_items.{s}"] = n
            gtrain = gi.filter("split = 'train'").select("group", "item")
            graph_notes[GRAPH_GROUP_ITEM] = "training group-item pairs, w = 1/deg(group)"
        else:
            gtrain = graphs.derived_group_items(mem, tpairs, opts.group_items_top)
            graph_notes[GRAPH_GROUP_ITEM] = (
                f"derived: the {opts.group_items_top} items most interacted with by the "
                "group's members (IGRec), w = 1/deg(group)"
            )
        w.write_graph(
            GRAPH_GROUP_ITEM,
            graphs.row_normalised(
                gtrain.select(F.col("group").alias("src"), F.col("item").alias("dst")).distinct()
            ),
            opts.graph_partitions,
        )
        graph_notes["group_user/user_group"] = "row-normalised, w = 1/out-degree"

    shutil.rmtree(w.path("_work"), ignore_errors=True)
    split_info = dict(sp.params)
    manifest = Manifest(
        name=name,
        source=source,
        counts=counts,
        behaviors=list(raw.behaviors),
        split=split_info,
        tables=dict(w.tables),
        filters={**prep.filters, "graphs": graph_notes, "notes": raw.notes},
        rejected=rej,
    )
    manifest.write(w.tmp)
    return {
        "bundle": w.out,
        "rows_in": rej["rows_in"],
        "rows_rejected": rej["rows"],
        "tables": {k: v.rows for k, v in sorted(w.tables.items())},
        "counts": counts,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spark_jobs.build_bundle",
        description="Turn raw interaction logs into a distrec dataset bundle.",
    )
    p.add_argument("--source", required=True, choices=sorted(SOURCES))
    p.add_argument("--input", required=True, help="input directory (or file for generic)")
    p.add_argument("--out", required=True, help="bundle directory, e.g. data/bundles/<name>")
    p.add_argument(
        "--master",
        default="local[2]",
        help="Spark master (default local[2]; 'none' lets spark-submit decide)",
    )
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("overrides", nargs="*", help="key=value build options (see options.py)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = parse_overrides(args.overrides)
    from spark_jobs.session import make_session

    master = None if args.master == "none" else args.master
    spark = make_session(master, driver_memory=args.driver_memory)
    try:
        summary = build(spark, args.source, args.input, args.out, opts)
    finally:
        spark.stop()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
