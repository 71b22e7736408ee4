"""Memory of the rank-partitioned data plane (#15): peak RSS and reader RSS per rank while a rank
streams one epoch of its shards, at W = 1 and W = 2, on a synthetic bundle.

    python bench/data_plane.py gen --out data/bundles/dp_1e7 --users 1000000 --per-user 10
    python bench/data_plane.py measure --bundle data/bundles/dp_1e7 --worlds 1 2
    python bench/data_plane.py measure --bundle data/bundles/dp_1e8 --worlds 2 --tag 1e8 --no-negatives
    python bench/data_plane.py gen-seq --out data/bundles/dps_1e7 --users 500000
    python bench/data_plane.py measure --reader dismir --bundle data/bundles/dps_1e7 --batch 8192

``gen`` writes the part of the bundle layout the BPR stream reads (``_manifest.json`` and
``graphs/ui.buy`` as 16 src-range files, rows sorted by src, about 2^16 pairs per row group:
what spark_jobs writes with ``partitions=16``) with pyarrow alone, cheaply. ``measure`` runs each
rank in its own process, one after another (the figure is per rank), and writes
``bench/results/data_plane_w<W>.json``: ``peak_rss_mb_per_rank`` (ru_maxrss of the rank process),
``reader_rss_mb_per_rank`` (peak minus the RSS after imports and a one-row read, which
initialises pyarrow's Parquet reader, ~14 MB: what opening the bundle and streaming the epoch
added: plan, shuffle windows, per-step arrays and negatives).

``gen-seq`` / ``--reader dismir|mdgr``: the same for the streamed sequence readers
(:class:`~distrec.models.common.SequenceData`, MDGR's adds ``ts`` and ``hist_days``): a
``sequences`` table of ``--users`` rows of 10 to 32 items (about 20 users x 10^6 samples at
500,000 users), 16 files of about 2^16 items per row group; a rank builds every payload of one
epoch (history windows, positives, 10 uniform negatives per sample), no co-occurrence graph or
noise (catalogue tables, not data). Results: ``bench/results/data_plane_<reader>_w<W>.json``.
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


def gen_seq(out: Path, users: int, items: int, parts: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distrec.data.schema import SEQUENCES, Manifest, TableInfo, schema_to_json

    d = out / "sequences"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = 0
    for k in range(parts):
        lo, hi = k * users // parts, (k + 1) * users // parts
        lens = rng.integers(10, 33, hi - lo)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        n = int(lens.sum())
        ts = np.arange(n, dtype=np.int64) * 3600  # increasing within every row
        t = pa.table({
            "user": pa.array(np.arange(lo, hi, dtype=np.int64)),
            "items": pa.ListArray.from_arrays(offsets, pa.array(rng.integers(0, items, n))),
            "ts": pa.ListArray.from_arrays(offsets, pa.array(ts)),
        }).cast(SEQUENCES)  # fmt: skip
        pq.write_table(t, d / f"part-{k:05d}.parquet", row_group_size=max(1, (1 << 16) // 21))
        samples += n - (hi - lo)
        print(f"part {k}: users {lo}..{hi - 1}, {n - (hi - lo)} samples", flush=True)
    Manifest(
        name=out.name,
        source="bench/data_plane.py gen-seq",
        counts={"users": users, "items": items, "groups": 0},
        behaviors=["click"],
        split={"protocol": "user_holdout"},
        tables={"sequences": TableInfo("sequences", users, schema_to_json(SEQUENCES))},
        partitions=parts,
    ).write(str(out))
    print(f"{samples} training samples", flush=True)


def seq_rank_main(reader: str, bundle: str, rank: int, world: int, batch: int, buf: int) -> dict:
    from distrec.data.bundle import Bundle
    from distrec.models.common.sequence_data import SequenceData, SequenceDataOptions
    from distrec.models.mdgr.data import MDGRData

    imports = _rss_mb()
    Bundle(bundle).table("sequences", ["user"])  # library initialisation (Parquet reader)
    base = _rss_mb()
    t0 = time.perf_counter()
    opts = SequenceDataOptions(max_len=20, num_candidates=10, batch_size=batch, shuffle_buffer=buf)
    cls = MDGRData if reader == "mdgr" else SequenceData
    data = cls(bundle, opts, rank, world)
    data.bundle.rows_read.clear()  # the initialisation read above is not the reader's
    steps = data.num_train_steps(0)
    rows = 0
    for step in range(steps):
        rows += data.payload(0, step)["size"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rank": rank,
        "steps": steps,
        "samples_streamed": rows,
        "samples_total": data.num_samples,
        "sequence_rows_read": data.bundle.rows_read.get("sequences", 0),
        "window_loads": len(data.stream.reads),
        "seconds": time.perf_counter() - t0,
        "rss_after_imports_mb": imports,
        "rss_after_one_row_read_mb": base,
        "peak_rss_mb": peak,
        "reader_rss_mb": peak - base,
    }


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
                   str(args.batch), str(int(args.negatives)), str(args.buffer),
                   args.reader]  # fmt: skip
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
            "reader": args.reader,
            "world_size": world,
            "global_batch": args.batch,
            "shuffle_buffer": args.buffer,
            "negatives": args.negatives,
            "ranks_run": "one after another, each in its own process",
            "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in per_rank],
            "reader_rss_mb_per_rank": [r["reader_rss_mb"] for r in per_rank],
            "per_rank": per_rank,
        }
        kind = "" if args.reader == "pairs" else f"_{args.reader}"
        name = f"data_plane{kind}_w{world}" + (f"_{args.tag}" if args.tag else "") + ".json"
        path = REPO / "bench" / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
        print("wrote", path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_rank":
        bun, r, w, gb, neg, buf, reader = sys.argv[2:9]
        if reader == "pairs":
            res = rank_main(bun, int(r), int(w), int(gb), neg == "1", int(buf))
        else:
            res = seq_rank_main(reader, bun, int(r), int(w), int(gb), int(buf))
        print(json.dumps(res))
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
    gs = sub.add_parser("gen-seq")
    gs.add_argument("--out", type=Path, required=True)
    gs.add_argument("--users", type=int, default=500_000)
    gs.add_argument("--items", type=int, default=100_000)
    gs.add_argument("--parts", type=int, default=16)
    gs.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("measure")
    m.add_argument("--reader", choices=["pairs", "dismir", "mdgr"], default="pairs")
    m.add_argument("--bundle", required=True)
    m.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    m.add_argument("--batch", type=int, default=65536)
    m.add_argument("--buffer", type=int, default=524288)
    m.add_argument("--negatives", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--tag", default="")
    a = ap.parse_args()
    if a.cmd == "gen":
        gen(a.out, a.users, a.items, a.per_user, a.parts, a.seed)
    elif a.cmd == "gen-seq":
        gen_seq(a.out, a.users, a.items, a.parts, a.seed)
    else:
        measure(a)


if __name__ == "__main__":
    main()
