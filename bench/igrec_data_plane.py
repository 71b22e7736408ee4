"""Memory of IGRec's rank-partitioned data plane (#15): per rank, peak RSS and reader RSS while
it reads its graph rows, streams one epoch of its user- and group-pair shards (with negatives)
and reads its share of the valid queries, at W = 1 and W = 2.

    python bench/igrec_data_plane.py --bundle data/bundles/scale_group --worlds 1 2

Each rank runs in its own process, one after another (the figure is per rank), and the script
writes ``bench/results/igrec_data_plane_w<W>.json``: ``peak_rss_mb_per_rank`` (ru_maxrss of the
rank process), ``reader_rss_mb_per_rank`` (peak minus the RSS after imports and a one-row read,
which initialises pyarrow's Parquet reader: what the data plane added), the rows read per table,
the owned graph rows' bytes, and (``--whole``, one process) the same for the whole-table reader
``load_graphs`` that every rank ran before (graph.partition=replicated / sampled mode still do).
No model tables: data memory only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rank_main(bundle: str, rank: int, world: int, batch: int, buf: int, whole: bool) -> dict:
    from distrec.data.bundle import Bundle
    from distrec.graph.partition import NodePartition
    from distrec.models.igrec.data import IGRecData
    from distrec.models.igrec.graphs import BundleGraphs, load_graphs

    imports = _rss_mb()
    b = Bundle(bundle)
    b.graph_rows("ui.buy", 0, 1)  # library initialisation (Parquet reader, pools)
    base = _rss_mb()
    t0 = time.perf_counter()
    if whole:  # the old reader: every table whole on every rank
        g = load_graphs(bundle, b.manifest)
        held = sum(a.nbytes for a in vars(g).values() if hasattr(a, "nbytes"))
        out: dict = {"whole_graph_bytes": held}
    else:
        m = b.manifest
        part = NodePartition(
            {"user": m.num_users, "item": m.num_items, "group": m.num_groups}, world, rank
        )
        graphs = BundleGraphs(bundle, m)
        rows = graphs.owned({t: part.range(t) for t in ("user", "item", "group")}, 0)
        data = IGRecData(
            bundle, target_behavior=len(m.behaviors) - 1, batch_size=batch, eval_batch_size=4096,
            num_negatives=1, rank=rank, world=world, seed=0, buffer_rows=buf,
        )  # fmt: skip
        steps = data.num_train_steps(0)
        n_u = n_g = 0
        for step in range(steps):
            p = data.payload(0, step)["dense"]
            n_u += len(p["users"])
            n_g += len(p["groups"])
        queries = {t: int(sum(len(q.ids) for q in data.eval_queries("valid", t)))
                   for t in ("user", "group")}  # fmt: skip
        out = {
            "steps": steps,
            "user_pairs_streamed": n_u,
            "group_pairs_streamed": n_g,
            "valid_queries": queries,
            "owned_graph_bytes": rows.nbytes(),
            "graph_rows_read": graphs.rows_read,
            "rows_read": dict(data.bundle.rows_read),
        }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rank": rank,
        **out,
        "seconds": time.perf_counter() - t0,
        "rss_after_imports_mb": imports,
        "rss_after_one_row_read_mb": base,
        "peak_rss_mb": peak,
        "reader_rss_mb": peak - base,
    }


def measure(args: argparse.Namespace) -> None:
    runs = [(w, False) for w in args.worlds] + ([(1, True)] if args.whole else [])
    for world, whole in runs:
        per_rank = []
        load = [os.getloadavg()[0]]
        for rank in range(world):
            cmd = [sys.executable, __file__, "_rank", args.bundle, str(rank), str(world),
                   str(args.batch), str(args.buffer), str(int(whole))]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                   "PYTHONPATH": str(REPO)}  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            per_rank.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(per_rank[-1], flush=True)
        load.append(os.getloadavg()[0])
        res = {
            "command": " ".join([sys.executable, *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cores",
            "load_before_after": load,
            "bundle": args.bundle,
            "reader": "load_graphs (whole tables, old)" if whole else "IGRecData + BundleGraphs",
            "world_size": world,
            "global_batch": args.batch,
            "shuffle_buffer": args.buffer,
            "ranks_run": "one after another, each in its own process",
            "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in per_rank],
            "reader_rss_mb_per_rank": [r["reader_rss_mb"] for r in per_rank],
            "per_rank": per_rank,
        }
        name = f"igrec_data_plane_w{world}" + ("_whole" if whole else "") + ".json"
        path = REPO / "bench" / "results" / name
        path.write_text(json.dumps(res, indent=2))
        print("wrote", path, flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_rank":
        bun, r, w, gb, buf, whole = sys.argv[2:8]
        print(json.dumps(rank_main(bun, int(r), int(w), int(gb), int(buf), whole == "1")))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--buffer", type=int, default=524288)
    ap.add_argument("--whole", action="store_true", help="also measure load_graphs (old reader)")
    measure(ap.parse_args())


if __name__ == "__main__":
    main()
