"""Per-rank cost of owned (partitioned) full propagation: L LightGCN layers forward + backward
over this rank's rows, halo all-to-all included, at W ranks (gloo, one thread per rank).

Synthetic bipartite graph with skewed item popularity (popular items at random ids); every rank builds it from the same seed
and keeps its own rows (PartitionedGraph). Reports per world size: step_p50_ms / p95 (max over
ranks), edges per rank, halo rows per layer (per rank), peak RSS per rank, cpu seconds per step
summed over ranks.

Usage: python bench/partitioned_propagation.py [--users U] [--items I] [--edges E] [--dim D]
    [--layers L] [--steps S] [--ranks 1 2] [--out bench/results/partitioned_propagation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distrec.data.csr import Csr
from distrec.distributed.exchange import make_exchange
from distrec.graph.adjacency import sym_normalized
from distrec.graph.halo import PartitionedGraph
from distrec.graph.partition import NodePartition
from distrec.graph.propagate import propagate_partitioned


def _graph(a: argparse.Namespace) -> Csr:
    rng = np.random.default_rng(0)
    u = rng.integers(0, a.users, a.edges)
    # popular items at random ids (a bundle numbers items by raw id, not by popularity)
    i = rng.permutation(a.items)[(rng.zipf(1.2, a.edges) - 1) % a.items]
    return sym_normalized(Csr.from_pairs(u, i, a.users, a.items))


def _worker(rank: int, world: int, a: argparse.Namespace, port: int, q: mp.Queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ex = make_exchange()
    ui = _graph(a)
    iu = ui.transpose()
    part = NodePartition({"user": a.users, "item": a.items}, world, rank)
    pg = PartitionedGraph(part, [[("user", "item", ui), ("item", "user", iu)]], ex)
    del ui, iu  # the rank keeps its own rows only
    n = part.num_local[rank]
    h0 = torch.randn(n, a.dim, generator=torch.Generator().manual_seed(rank), requires_grad=True)
    times, cpu = [], []
    for _ in range(a.steps + 1):
        dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        final = torch.stack(propagate_partitioned(pg, h0, a.layers)).mean(0)
        final.square().sum().backward()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        h0.grad = None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put({"rank": rank, "times": times[1:], "cpu": cpu[1:], "nnz": pg.nnz,
           "halo": pg.halo.size, "local_rows": n, "peak_rss_mb": peak_mb})  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


def run(world: int, a: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = 29800 + world
    procs = [ctx.Process(target=_worker, args=(r, world, a, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    res = sorted((q.get() for _ in procs), key=lambda r: r["rank"])
    for p in procs:
        p.join()
    step = [max(t) for t in zip(*(r["times"] for r in res))]  # a step ends with its slowest rank
    return {
        "world": world,
        "step_p50_ms": 1e3 * statistics.median(step),
        "step_p95_ms": 1e3 * float(np.percentile(step, 95)),
        "cpu_seconds_per_step": statistics.median([sum(c) for c in zip(*(r["cpu"] for r in res))]),
        "edges_per_rank": [r["nnz"] for r in res],
        "halo_rows_per_layer": [r["halo"] for r in res],
        "local_rows": [r["local_rows"] for r in res],
        "peak_rss_mb_per_rank": [round(r["peak_rss_mb"], 1) for r in res],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--edges", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="bench/results/partitioned_propagation.json")
    a = p.parse_args(argv)
    runs = []
    for w in a.ranks:
        runs.append(run(w, a))
        print(json.dumps(runs[-1]), flush=True)
    out = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus",
        "load_avg_1m_end": os.getloadavg()[0],
        "torch": torch.__version__,
        "users": a.users, "items": a.items, "edges": a.edges, "dim": a.dim, "layers": a.layers,
        "threads_per_rank": 1,
        "runs": runs,
    }  # fmt: skip
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
