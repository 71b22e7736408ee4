"""Memory of the rank-partitioned data plane (#15): peak RSS and reader RSS per rank while a rank
streams one epoch of its shards, at W = 1 and W = 2, on a synthetic bundle.

    python bench/data_plane.py gen --out data/bundles/dp_1e7 --users 1000000 --per-user 10
    python bench/data_plane.py measure --bundle data/bundles/dp_1e7 --worlds 1 2
    python bench/data_plane.py measure --bundle data/bundles/dp_1e8 --worlds 2 --tag 1e8 --no-negatives

``gen`` writes the part of the bundle layout the BPR stream reads (``_manifest.json`` and
``graphs/ui.buy`` as 16 src-range files, rows sorted by src, about 2^16 pairs per row group:
what spark_jobs writes with ``partitions=16``) with pyarrow alone, cheaply. ``measure`` runs each
rank in its own process, one after another (the figure is per rank), and writes
``bench/results/data_plane_w<W>.json``: ``peak_rss_mb_per_rank`` (ru_maxrss of the rank process),
``reader_rss_mb_per_rank`` (peak minus the RSS after imports and a one-row read, which
initialises pyarrow's Parquet reader, ~14 MB: what opening the bundle and streaming the epoch
added: plan, shuffle windows, per-step arrays and negatives).
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def gen(out: Path, users: int, items: int, per_user: int, parts: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distrec.data.schema import GRAPH, Manifest, TableInfo, schema_to_json

    d = out / "graphs" / "ui.buy"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for k in range(parts):
        lo, hi = k * users // parts, (k + 1) * users // parts
        n = hi - lo
        lens = rng.integers(max(1, per_user // 2), per_user + per_user // 2 + 1, n)
        # distinct sorted items per user: cumulative gaps (cheap, no per-user loop)
        gaps = rng.integers(1, max(2, 2 * items // (per_user * 2)), int(lens.sum()))
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        first = np.repeat(rng.integers(0, items, n), lens)
        within = np.cumsum(gaps) - np.repeat(
            np.cumsum(gaps)[offsets[:-1]] - gaps[offsets[:-1]], lens
        )
        dst = (first + within) % items
        w = np.full(dst.shape[0], 0.1, np.float32)
        t = pa.table(
            {
                "src": pa.array(np.arange(lo, hi, dtype=np.int64)),
                "dst": pa.ListArray.from_arrays(pa.array(offsets), pa.array(dst.astype(np.int64))),
                "w": pa.ListArray.from_arrays(pa.array(offsets), pa.array(w)),
            },
        ).cast(GRAPH)
        name = f"part-{k:05d}.parquet"
        pq.write_table(t, d / name, row_group_size=max(1, (1 << 16) // per_user))
        files.append({"path": name, "rows": n, "index": k, "src_lo": lo, "src_hi": hi - 1})
        print(f"part {k}: users {lo}..{hi - 1}, {int(lens.sum())} pairs", flush=True)
    m = Manifest(
        name=out.name,
        source="bench/data_plane.py gen",
        counts={"users": users, "items": items, "groups": 0},
        behaviors=["buy"],
        split={"protocol": "given"},
        tables={
            "graphs/ui.buy": TableInfo("graphs/ui.buy", users, schema_to_json(GRAPH), "src_range")
        },
    )
    m.write(str(out))


def rank_main(bundle: str, rank: int, world: int, batch: int, negatives: bool, buf: int) -> dict:
    from distrec.data.bundle import Bundle
    from distrec.data.interactions import InteractionData

    imports = _rss_mb()
    Bundle(bundle).graph_rows("ui.buy", 0, 1)  # library initialisation (Parquet reader, pools)
    base = _rss_mb()
    t0 = time.perf_counter()
    data = InteractionData(bundle, rank, world, batch_size=batch, prefetch=0, buffer_rows=buf)
    steps = data.num_train_steps(0)
    rows = 0
    for step in range(steps):
        if negatives:
            u, _, _ = data.payload(0, step)
            rows += u.shape[0]
        else:
            rows += sum(p.users.shape[0] for p in data.stream.step_slices(0, step))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rank": rank,
        "steps": steps,
        "rows_streamed": rows,
        "graph_rows_read": data.bundle.rows_read.get("graphs/ui.buy", 0),
        "seconds": time.perf_counter() - t0,
        "rss_after_imports_mb": imports,
        "rss_after_one_row_read_mb": base,
        "peak_rss_mb": peak,
        "reader_rss_mb": peak - base,
    }


def measure(args: argparse.Namespace) -> None:
    for world in args.worlds:
        per_rank = []
        for rank in range(world):
            cmd = [sys.executable, __file__, "_rank", args.bundle, str(rank), str(world),
                   str(args.batch), str(int(args.negatives)), str(args.buffer)]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            per_rank.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(per_rank[-1], flush=True)
        res = {
            "command": " ".join([sys.executable, *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cores",
            "load_before_after": [os.getloadavg()[0]],
            "bundle": args.bundle,
            "world_size": world,
            "global_batch": args.batch,
            "shuffle_buffer": args.buffer,
            "negatives": args.negatives,
            "ranks_run": "one after another, each in its own process",
            "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in per_rank],
            "reader_rss_mb_per_rank": [r["reader_rss_mb"] for r in per_rank],
            "per_rank": per_rank,
        }
        name = f"data_plane_w{world}" + (f"_{args.tag}" if args.tag else "") + ".json"
        path = REPO / "bench" / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
        print("wrote", path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_rank":
        bun, r, w, gb, neg, buf = sys.argv[2:8]
        print(json.dumps(rank_main(bun, int(r), int(w), int(gb), neg == "1", int(buf))))
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--users", type=int, default=1_000_000)
    g.add_argument("--items", type=int, default=100_000)
    g.add_argument("--per-user", type=int, default=10)
    g.add_argument("--parts", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("measure")
    m.add_argument("--bundle", required=True)
    m.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    m.add_argument("--batch", type=int, default=65536)
    m.add_argument("--buffer", type=int, default=524288)
    m.add_argument("--negatives", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--tag", default="")
    a = ap.parse_args()
    if a.cmd == "gen":
        gen(a.out, a.users, a.items, a.per_user, a.parts, a.seed)
    else:
        measure(a)


if __name__ == "__main__":
    main()
