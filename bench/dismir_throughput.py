"""DisMIR training throughput at 1 and 2 ranks (gloo) on synthetic sequences with 10^6 items.

Writes a synthetic ``user_holdout``-style bundle with pyarrow (sequences + ``graphs/item_cooc``
from adjacent items), then for each world size spawns the ranks, shards the item
item table row-wise with the engine's ``shard_model`` (fused Adagrad) and times
training steps of the real model and data adapter (batch building included, no prefetch).

    OMP_NUM_THREADS=1 python bench/dismir_throughput.py --items 1000000 --worlds 1 2 \
        --out bench/results/dismir_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distrec.data.schema import GRAPH, SEQUENCES, Manifest, TableInfo, schema_to_json  # noqa: E402


def write_bundle(path: Path, users: int, items: int, length: int, seed: int) -> None:
    """Sequences whose items follow a Zipf-like popularity; S_ij from adjacent pairs."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    seqs = rng.choice(items, size=(users, length), p=pop / pop.sum())
    path.mkdir(parents=True)
    offsets = np.arange(0, users * length + 1, length)
    seq_t = pa.table(
        {
            "user": np.arange(users, dtype=np.int64),
            "items": pa.ListArray.from_arrays(offsets, seqs.reshape(-1).astype(np.int64)),
            "ts": pa.ListArray.from_arrays(
                offsets, np.tile(np.arange(length, dtype=np.int64), users)
            ),
        },
        schema=SEQUENCES,
    )
    (path / "sequences").mkdir()
    pq.write_table(seq_t, path / "sequences" / "part-00000.parquet")
    a, b = seqs[:, :-1].reshape(-1), seqs[:, 1:].reshape(-1)
    keep = a != b
    src = np.concatenate([a[keep], b[keep]])
    dst = np.concatenate([b[keep], a[keep]])
    key, cnt = np.unique(src * items + dst, return_counts=True)
    src, dst = key // items, key % items
    nodes, starts = np.unique(src, return_index=True)
    row_sum = np.add.reduceat(cnt, starts).astype(np.float64)
    w = (cnt / np.repeat(row_sum, np.diff(np.append(starts, len(src))))).astype(np.float32)
    goff = np.append(starts, len(src)).astype(np.int32)
    graph = pa.table(
        {
            "src": nodes.astype(np.int64),
            "dst": pa.ListArray.from_arrays(goff, dst.astype(np.int64)),
            "w": pa.ListArray.from_arrays(goff, w),
        },
        schema=GRAPH,
    )
    (path / "graphs" / "item_cooc").mkdir(parents=True)
    pq.write_table(graph, path / "graphs" / "item_cooc" / "part-0.parquet")
    Manifest(
        name="synthetic-seq",
        source="bench/dismir_throughput.py",
        counts={"users": users, "items": items, "groups": 0},
        behaviors=["click"],
        split={"protocol": "user_holdout"},
        tables={
            "sequences": TableInfo("sequences", users, schema_to_json(SEQUENCES)),
            "graphs/item_cooc": TableInfo("graphs/item_cooc", len(nodes), schema_to_json(GRAPH)),
        },
    ).write(str(path))


def _worker(
    rank: int, world: int, port: int, bundle: str, args: argparse.Namespace, out: str
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    os.environ.update(LOCAL_WORLD_SIZE=str(world), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from distrec.config import load_config
        from distrec.distributed.sharding import shard_model
        from distrec.models.dismir import SPEC

        cfg = load_config(
            "dismir",
            str(REPO / "configs/dismir/gowalla.yaml"),
            [f"data.bundle={bundle}", f"data.batch_size={args.batch}", "metrics.enabled=false"],
        )
        model = SPEC.build_model(cfg, Manifest.load(bundle), torch.device("meta"))
        dmp = shard_model(model, cfg, torch.device("cpu"))
        data = SPEC.build_data(cfg, bundle, rank, world)
        times, data_times = [], []
        it = data.train_batches(0)
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            loss, _ = dmp(batch)
            loss.backward()
            dist.barrier()
            t2 = time.perf_counter()
            if step >= args.warmup:
                times.append(t2 - t0)
                data_times.append(t1 - t0)
        step_s = float(np.median(times))
        res = {
            "world": world,
            "global_batch": data.global_batch,
            "step_seconds_median": step_s,
            "data_seconds_median": float(np.median(data_times)),
            "samples_per_second": data.global_batch / step_s,
        }
        if rank == 0:
            Path(out).write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--length", type=int, default=30)
    p.add_argument("--batch", type=int, default=1024, help="global batch")
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--port", type=int, default=29740)
    p.add_argument("--out", default=str(REPO / "bench/results/dismir_throughput.json"))
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        t0 = time.perf_counter()
        write_bundle(bundle, args.users, args.items, args.length, seed=0)
        print(
            f"synthetic bundle: {args.users} users x {args.length}, {args.items} items ({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
        for i, world in enumerate(args.worlds):
            out = Path(tmp) / f"w{world}.json"
            mp.start_processes(
                _worker,
                args=(world, args.port + i, str(bundle), args, str(out)),
                nprocs=world,
                start_method="spawn",
            )
            results.append(json.loads(out.read_text()))
            print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "dismir training step (capsule, partition loss, hard negatives), row_wise item table",
        "items": args.items,
        "users": args.users,
        "seq_len": args.length,
        "dim": 64,
        "machine": "2-core CPU sandbox, shared with other jobs (load varies)",
        "date": "2026-11-23",
        "command": " ".join(["python"] + sys.argv),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
