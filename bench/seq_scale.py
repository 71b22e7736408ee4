"""Sequence models at catalogue scale (issue #16): training throughput, step time and per-rank
peak RSS of DisMIR / MDGR, optionally a full-catalogue evaluation, and the same measurement of
an older source tree back to back (old, new, old, new ...) in one script.

DisMIR runs on a synthetic ``user_holdout``-style bundle with ``--items`` items
(``bench/dismir_throughput.py``'s writer: 20,000 users x 30 Zipf-distributed items, S_ij from
adjacent pairs); MDGR on a real bundle (``--bundle``, e.g. data/bundles/ml100k). Every rank
trains the real model and data adapter under a row-wise sharded item table with the
fused sparse optimizer (``shard_model``), dense parameters with Adam; one step = batch build +
forward + backward + optimizer step, ended by a barrier (the slowest rank's time).

    OMP_NUM_THREADS=1 python bench/seq_scale.py --model dismir --items 1000000 --ranks 2 \
        --baseline /tmp/base --repeats 2
    OMP_NUM_THREADS=1 python bench/seq_scale.py --model dismir --items 10000000 --ranks 2 \
        --eval-queries 1024 train.sparse_optimizer=rowwise_adagrad
    OMP_NUM_THREADS=1 python bench/seq_scale.py --model mdgr --bundle data/bundles/ml100k \
        --config configs/mdgr/ml100k.yaml --ranks 2 model.iterations=5

``--baseline DIR``: a checkout of an older commit (``git archive REV distrec configs | tar -x
-C DIR``) measured alternately with this tree. Writes
``bench/results/seq_scale_<model>_<items>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MACHINE = "2-core CPU sandbox shared by 7 helpers (see load averages)"


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    os.environ.update(LOCAL_WORLD_SIZE=str(world), WORLD_SIZE=str(world), RANK=str(rank))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from distrec.config import load_config
        from distrec.data.schema import Manifest
        from distrec.distributed.sharding import shard_model
        from distrec.models.registry import get_spec

        spec = get_spec(args.model)
        overrides = [f"data.bundle={args.bundle}", "metrics.enabled=false", *args.overrides]
        cfg = load_config(args.model, str(REPO / args.config), overrides)
        manifest = Manifest.load(args.bundle)
        model = spec.build_model(cfg, manifest, torch.device("meta"))
        dmp = shard_model(model, cfg, torch.device("cpu"))
        dense = [p for n, p in dmp.named_parameters() if "ec." not in n and p.requires_grad]
        opt = torch.optim.Adam(dense, lr=cfg.train.lr) if dense else None
        data = spec.build_data(cfg, args.bundle, rank, world)
        times: list[float] = []
        it = data.train_batches(0)
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = next(it)
            loss, _ = dmp(batch)
            if opt is not None:
                opt.zero_grad()
            loss.backward()
            if opt is not None:
                opt.step()
            dist.barrier()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res = {
            "global_batch": int(data.global_batch),
            "step_seconds": times,
            "train_peak_rss_mb": train_rss,
        }
        if args.eval_queries:
            res.update(_eval(dmp, data, cfg, manifest.num_items, args.eval_queries))
            res["eval_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        parts: list = [None] * world
        dist.all_gather_object(parts, res)
        if rank == 0:
            Path(out).write_text(json.dumps(parts))
    finally:
        dist.destroy_process_group()


def _eval(dmp, data, cfg, num_items: int, n_queries: int) -> dict:  # type: ignore[no-untyped-def]
    """Full-catalogue ranking of ``n_queries`` training histories (last 20 items predict the
    next one) with the engine's evaluator: top-50, no AUC."""
    import torch

    from distrec.eval.ranking import evaluate_split
    from distrec.models.api import Batch, EvalQuery
    from distrec.models.common.sequence_data import make_kjt

    # this rank's first training samples of epoch 0 (streamed, its shards only): n_queries
    # over all ranks, as many as the epoch holds
    want = max(1, min(n_queries, data.num_samples) // data.world_size)
    hs: list[np.ndarray] = []
    ls: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    for step in range(data.num_train_steps(0)):
        if sum(len(p) for p in ps) >= want:
            break
        f = data.payload(0, step)["feats"]
        hs.append(f["hist"][0])
        ls.append(f["hist"][1])
        ps.append(f["pos"][0])
    hlen = np.concatenate(ls)[:want]
    hist, pos = np.concatenate(hs)[: int(hlen.sum())], np.concatenate(ps)[:want]
    mine = data.rank * want + np.arange(len(pos), dtype=np.int64)  # query ids
    dense = {}
    if data.opts.noise_dim:
        g = torch.Generator().manual_seed(0)
        dense["noise"] = torch.randn(len(mine), data.opts.max_len, data.opts.noise_dim, generator=g)
    batch = Batch(
        sparse={"ec": make_kjt({"hist": (hist, hlen)}, data.keys, len(mine))}, dense=dense
    )
    q = EvalQuery(
        batch=batch,
        ids=torch.from_numpy(mine),
        targets=[[int(x)] for x in pos],
        exclude=[[] for _ in mine],
    )
    t0 = time.perf_counter()
    res = evaluate_split(
        dmp.module,
        data,
        "test",
        num_items=num_items,
        ks=[20, 50],
        item_chunk=65536,
        queries=[q],
        with_auc=False,
    )
    return {"eval_seconds": time.perf_counter() - t0, "eval_metrics": res.metrics}


def _run(args: argparse.Namespace) -> None:
    """One measurement of the tree on sys.path[0] (``--run``): spawn the ranks."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "res.json")
        mp.start_processes(
            _worker,
            args=(args.ranks, args.port, args, out),
            nprocs=args.ranks,
            start_method="spawn",
        )
        Path(args.result).write_text(Path(out).read_text())


def _summary(parts: list[dict], ranks: int, load: tuple[float, float]) -> dict:
    step = np.max(np.array([p["step_seconds"] for p in parts]), axis=0)
    g = parts[0]["global_batch"]
    out = {
        "samples_per_s": g / float(np.median(step)),
        "step_p50_ms": 1000 * float(np.median(step)),
        "step_p95_ms": 1000 * float(np.percentile(step, 95)),
        "global_batch": g,
        "ranks": ranks,
        "peak_rss_mb_per_rank": max(
            max(p.get("eval_peak_rss_mb", 0.0), p["train_peak_rss_mb"]) for p in parts
        ),
        "train_peak_rss_mb_per_rank": [p["train_peak_rss_mb"] for p in parts],
        "load_1m_before_after": list(load),
    }
    if "eval_seconds" in parts[0]:
        out["eval_seconds"] = max(p["eval_seconds"] for p in parts)
        out["eval_peak_rss_mb_per_rank"] = [p["eval_peak_rss_mb"] for p in parts]
        out["eval_metrics"] = parts[0]["eval_metrics"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["dismir", "mdgr"], default="dismir")
    p.add_argument("--config", default=None)
    p.add_argument("--bundle", default=None, help="MDGR: a real bundle; DisMIR: synthetic")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--baseline", default=None, help="older source tree to measure alternately")
    p.add_argument("--eval-queries", type=int, default=0)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=k=v,k=v: also measure this tree with these extra overrides (e.g. a switch)",
    )
    p.add_argument("--port", type=int, default=29960)
    p.add_argument("--out", default=None)
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    args.config = args.config or f"configs/{args.model}/gowalla.yaml"
    if args.run:
        _run(args)
        return
    command = " ".join(["OMP_NUM_THREADS=1 python bench/seq_scale.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle is None:
            sys.path.insert(0, str(REPO / "bench"))
            from dismir_throughput import write_bundle

            args.bundle = str(Path(tmp) / "bundle")
            write_bundle(Path(args.bundle), args.users, args.items, 30, seed=0)
        items = json.loads((Path(args.bundle) / "_manifest.json").read_text())["counts"]["items"]
        trees = {"new": str(REPO)}
        extra: dict[str, list[str]] = {"new": [], "old": []}
        if args.baseline:
            trees["old"] = args.baseline
        for v in args.variant:
            name, _, sets = v.partition("=")
            trees[name] = str(REPO)
            extra[name] = [x for x in sets.split(",") if x]
        runs: dict[str, list[dict]] = {k: [] for k in trees}
        port = args.port
        order = (["old"] if args.baseline else []) + [k for k in trees if k != "old"]
        for rep in range(args.repeats):
            for name in order:
                tree = trees[name]
                res_path = Path(tmp) / f"{name}{rep}.json"
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--run",
                    "--result",
                    str(res_path),
                    "--model",
                    args.model,
                    "--config",
                    args.config,
                    "--bundle",
                    args.bundle,
                    "--ranks",
                    str(args.ranks),
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                    "--port",
                    str(port),
                    "--eval-queries",
                    str(args.eval_queries if name != "old" else 0),
                    *args.overrides,
                    *extra[name],
                ]
                port += 1
                env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
                load0 = os.getloadavg()[0]
                subprocess.run(cmd, check=True, env=env, cwd=tree)
                s = _summary(
                    json.loads(res_path.read_text()), args.ranks, (load0, os.getloadavg()[0])
                )
                s["repeat"] = rep
                runs[name].append(s)
                print(json.dumps({"tree": name, **s}), flush=True)
    best = {k: float(np.median([r["samples_per_s"] for r in v])) for k, v in runs.items()}
    report = {
        "benchmark": f"{args.model} training at catalogue scale (issue #16)",
        "model": args.model,
        "items": items,
        "ranks": args.ranks,
        "samples_per_s": best["new"],
        "step_p50_ms": float(np.median([r["step_p50_ms"] for r in runs["new"]])),
        "peak_rss_mb_per_rank": max(r["peak_rss_mb_per_rank"] for r in runs["new"]),
        "baseline_samples_per_s": best.get("old"),
        "baseline_tree": args.baseline,
        "variants": {k: {"overrides": extra[k], "samples_per_s": best[k]} for k in trees},
        "runs": runs,
        "overrides": args.overrides,
        "load": "1-min load average before/after each run in runs[*].load_1m_before_after",
        "machine": MACHINE,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "command": command,
    }
    out = args.out or str(REPO / f"bench/results/seq_scale_{args.model}_{items}.json")
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
