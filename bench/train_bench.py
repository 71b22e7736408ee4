"""Training throughput of any model/config at 1..N ranks: JSON to bench/results/.

    python bench/train_bench.py --model mf --config configs/mf/synth.yaml --ranks 1 2 \
        --steps 100 --warmup 10 data.bundle=data/demo/bundle

For each rank count it launches ``torchrun --nproc_per_node=R bench/train_bench.py --worker ...``;
every rank trains ``warmup + steps`` steps with the real engine (session, sharding, pipeline,
data prefetch) and records per-step wall time, time waiting for data and its peak RSS. The
parent writes ``bench/results/train_<model>_<R>r.json`` with samples/s (global), step time
p50/p95, the data-wait share and peak RSS per rank.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch.distributed as dist

    from distrec.config import load_config
    from distrec.engine.loop import _Timed
    from distrec.engine.session import build_session

    cfg = load_config(
        args.model,
        args.config,
        list(args.overrides) + ["metrics.enabled=false", f"run.dir={args.tmp}/run"],
    )
    s = build_session(args.model, cfg)
    total = args.warmup + args.steps
    times: list[float] = []
    waits: list[float] = []
    sizes: list[int] = []
    pipe = None
    use_pipe = cfg.train.pipeline and s.model.pipelineable and s.wrapped is not s.model
    epoch = 0
    s.wrapped.train()
    while len(times) < total:
        it = _Timed(iter(s.data.train_batches(epoch)))
        if use_pipe:
            from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

            pipe = TrainPipelineSparseDist(s.wrapped, s.optimizer, s.env.device)
        while len(times) < total:
            t0, w0 = time.perf_counter(), it.wait
            try:
                if pipe is not None:
                    pipe.progress(it)
                else:
                    assert s.optimizer is not None
                    batch = next(it)
                    loss, _ = s.wrapped(batch)
                    s.optimizer.zero_grad()
                    loss.backward()
                    s.optimizer.step()
            except StopIteration:
                break
            times.append(time.perf_counter() - t0)
            waits.append(it.wait - w0)
            sizes.append(it.last.size if it.last is not None else 0)
        if pipe is not None:
            pipe.detach()
        epoch += 1
    m = slice(args.warmup, total)
    rec = {
        "rank": s.env.rank,
        "step_seconds": times[m],
        "wait_seconds": waits[m],
        "samples": int(np.sum(sizes[m])),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(args.tmp, f"rank{s.env.rank}.json").write_text(json.dumps(rec))
    dist.barrier()
    dist.destroy_process_group()


def run_one(args: argparse.Namespace, ranks: int, port: int) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="distrec-bench-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={ranks}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(Path(__file__).resolve()),
            "--worker",
            "--model",
            args.model,
            "--config",
            args.config,
            "--tmp",
            tmp,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            *args.overrides,
        ]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        print(f"[bench] {args.model} at {ranks} rank(s) ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=REPO, env=env)
        recs = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(ranks)]
    # a step ends when the slowest rank ends it (collectives), so use the per-step max
    step = np.max(np.array([r["step_seconds"] for r in recs]), axis=0)
    wait = np.array([r["wait_seconds"] for r in recs])
    steps_s = np.array([r["step_seconds"] for r in recs])
    samples = sum(r["samples"] for r in recs)
    return {
        "model": args.model,
        "config": args.config,
        "overrides": list(args.overrides),
        "ranks": ranks,
        "measured_steps": args.steps,
        "warmup_steps": args.warmup,
        "samples_per_s": samples / float(step.sum()),
        "step_time_p50_ms": float(np.percentile(step, 50) * 1e3),
        "step_time_p95_ms": float(np.percentile(step, 95) * 1e3),
        "data_wait_share": float(wait.sum() / steps_s.sum()),
        "data_wait_share_per_rank": (wait.sum(1) / steps_s.sum(1)).tolist(),
        "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in recs],
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU ({platform.node()}), "
        "shared with other jobs",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "bench/train_bench.py", *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--port", type=int, default=29540)
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--tag", default="", help="suffix of the result file name")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_intermixed_args(argv)
    if args.worker:
        worker(args)
        return 0
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(args.ranks):
        res = run_one(args, r, args.port + i)
        name = f"train_{args.model}_{r}r{('_' + args.tag) if args.tag else ''}.json"
        (out_dir / name).write_text(json.dumps(res, indent=2) + "\n")
        print(
            json.dumps(
                {
                    k: res[k]
                    for k in (
                        "model",
                        "ranks",
                        "samples_per_s",
                        "step_time_p50_ms",
                        "step_time_p95_ms",
                        "data_wait_share",
                        "peak_rss_mb_per_rank",
                    )
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
