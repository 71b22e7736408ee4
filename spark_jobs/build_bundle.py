"""Raw logs -> dataset bundle (layout in distrec/data/schema.py).

    python -m spark_jobs.build_bundle --source mafengwo --input ../shared/data/mafengwo \
        --out data/bundles/mafengwo [--master local[2]] [split=random_per_user seed=7 ...]

The same module runs under ``spark-submit spark_jobs/build_bundle.py ...`` on a cluster
(``--master`` omitted: spark-submit decides). Stages print progress on stderr; a summary
(rows in, rejected, rows out per table, time) is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from distrec.data.schema import (
    GRAPH_GROUP_ITEM,
    GRAPH_GROUP_USER,
    GRAPH_ITEM_COOC,
    GRAPH_USER_GROUP,
    Manifest,
    iu_graph,
    ui_graph,
)
from spark_jobs import graphs
from spark_jobs.errors import UserError
from spark_jobs.ingest import SOURCES, get_reader
from spark_jobs.options import BuildOptions, OptionError, parse_overrides
from spark_jobs.prepare import prepare
from spark_jobs.report import Progress, check_share, reject_stats
from spark_jobs.splits import split_events, user_sequences
from spark_jobs.store import norm
from spark_jobs.writer import BundleWriter

REJECT_COLS = ["source_file", "line", "reason", "raw"]


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
    w.write("_rejected", bad, single=True)


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
    input_dir = norm(input_dir) if input_dir else ""
    log = Progress(quiet)
    read = get_reader(source)
    raw = read(spark, input_dir, opts)
    protocol = opts.split or raw.default_split
    if protocol == "given" and not raw.has_given_split:
        raise UserError(
            f"split=given: the {source} input has no split of its own (generic: map a split "
            "column with col.split=<column>); choose another split protocol"
        )
    name = opts.name or norm(out).rstrip("/").rsplit("/", 1)[-1]
    log(f"source={source} input={input_dir} split={protocol}")
    w = BundleWriter(
        spark, out, partitions=opts.partitions, row_group_mb=opts.row_group_mb, commit=opts.commit
    )
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
        # The first rejected row in file order is the one the error line names.
        samples.sort(key=lambda r: (r["source_file"] or "", r["line"] or 0))
    _write_rejects(spark, w, frames, raw.empty_files)
    if rej["share"] > opts.max_reject_share:
        # The bundle is not published, so the reject table goes next to where it would be.
        keep = w.out.rstrip("/") + ".rejected"
        files = [f"{w.path('_rejected')}/{e['path']}" for e in w.tables["_rejected"].files or []]
        spark.read.parquet(*files).write.mode("overwrite").parquet(keep)
        check_share(rej, opts.max_reject_share, samples[:5], keep)
    log(f"read {rej['rows_in']} rows, rejected {rej['rows']} ({rej['share']:.3%})")

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
        w.write(f"ids/{kind}", df, sort=["idx"], single=True)
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
    # held-out splits by user range (a rank reads its own users' rows), train round-robin
    w.write(
        "interactions",
        ev,
        partition_by="split",
        sort=["user", "item"],
        held_out_by=("user", counts["users"]),
    )
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
    w.write("sequences", user_sequences(tgt_train), sort=["user"])

    if sp.eval_rows is not None:
        log("writing eval rows")
        w.write(f"eval/{protocol}", sp.eval_rows, partition_by="split", sort=["user"])

    log("building graphs")
    graph_notes: dict[str, str] = {}
    for bi, b in enumerate(raw.behaviors):
        pairs = train.filter(F.col("behavior") == bi).select("user", "item").distinct()
        ui, iu = graphs.bipartite(pairs)
        w.write_graph(ui_graph(b), ui, counts["users"])
        w.write_graph(iu_graph(b), iu, counts["items"])
    graph_notes["ui/iu"] = "1/sqrt(deg_u*deg_i), degrees within that behavior's training graph"
    tpairs = tgt_train.select("user", "item").distinct()
    w.write_graph(
        GRAPH_ITEM_COOC,
        graphs.item_cooc(
            tpairs, topk=opts.cooc_topk, cap=opts.cooc_max_items_per_user, seed=opts.seed
        ),
        counts["items"],
    )
    graph_notes[GRAPH_ITEM_COOC] = (
        f"S_ij=co/sum_j co over target-behavior training pairs, top {opts.cooc_topk} per row, "
        f"users capped at {opts.cooc_max_items_per_user} items (seeded sample)"
    )
    if prep.members is not None:
        log("writing group tables")
        mem = prep.members.select("group", "user").distinct()
        w.write("groups/members", mem, sort=["group", "user"])
        w.write_graph(
            GRAPH_GROUP_USER,
            graphs.row_normalised(
                mem.select(F.col("group").alias("src"), F.col("user").alias("dst"))
            ),
            counts["groups"],
        )
        w.write_graph(
            GRAPH_USER_GROUP,
            graphs.row_normalised(
                mem.select(F.col("user").alias("src"), F.col("group").alias("dst"))
            ),
            counts["users"],
        )
        if sp.group_items is not None:
            gi = sp.group_items
            w.write(
                "groups/items",
                gi,
                partition_by="split",
                sort=["group", "item"],
                held_out_by=("group", counts["groups"]),
            )
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
            counts["groups"],
        )
        graph_notes["group_user/user_group"] = "row-normalised, w = 1/out-degree"

    w.store.delete(w.path("_work"), True)
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
        partitions=w.partitions,
    )
    w.write_manifest(manifest)  # last: the manifest names every table written above
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
    p.add_argument("--input", default="", help="input directory, file or URI")
    p.add_argument(
        "--input-file",
        action="append",
        default=[],
        metavar="ROLE=PATH",
        help="use PATH for one file role of the source (see spark_jobs/README.md)",
    )
    p.add_argument("--out", required=True, help="bundle directory or URI, e.g. data/bundles/x")
    p.add_argument(
        "--master",
        default="local[2]",
        help="Spark master (default local[2]; 'none' lets spark-submit decide)",
    )
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("overrides", nargs="*", help="key=value build options (see options.py)")
    return p


def _fail(msg: str) -> int:
    print(f"build_bundle: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = parse_overrides(args.overrides)
        for pair in args.input_file:
            role, sep, path = pair.partition("=")
            if not sep or not role or not path:
                raise OptionError(f"--input-file {pair!r}: expected ROLE=PATH")
            opts.input_files[role.strip()] = path
        if not args.input and not opts.input_files:
            raise OptionError("give --input DIR (or --input-file ROLE=PATH for each role)")
    except OptionError as e:
        return _fail(str(e))
    from spark_jobs.session import make_session

    master = None if args.master == "none" else args.master
    # A session that is already running (an embedding process, the tests) is reused, not stopped.
    owned = SparkSession.getActiveSession() is None
    spark = make_session(master, driver_memory=args.driver_memory)
    try:
        summary = build(spark, args.source, args.input, args.out, opts)
    except (UserError, OptionError) as e:
        return _fail(str(e))
    finally:
        if owned:
            spark.stop()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
