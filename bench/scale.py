"""Graph models at scale: LightGCN, IGRec and CIGF in full or sampled mode at 1..N ranks.

    python bench/scale.py --model cigf --mode sampled --ranks 1 2 4 \
        --bundle data/bundles/scale_mb --steps 20 --warmup 3 [k=v overrides ...]

For each rank count W it launches ``torchrun --nproc_per_node=W bench/scale.py --worker ...``;
every rank builds the real session (``distrec.engine.session.build_session``: sharding, DMP,
fused optimizer, data adapter with prefetch) and runs the engine's own training loop
(``distrec.engine.loop.Trainer._train_epoch``, what ``python -m distrec.train`` runs) for
``warmup + steps`` steps (``train.max_steps``); a metrics sink records each step's wall time and
the rows it looked up. With ``--wall-minutes M`` it trains for M minutes (``train.epochs`` large,
``train.max_steps`` from the measured step time) and then runs the engine's test evaluation, so
two settings can be compared after the same wall time.

Writes ``bench/results/scale_<model>_<mode>_w<W>[<suffix>].json``: samples_per_s (global),
step_p50_ms / step_p95_ms (per-step max over ranks), cpu_seconds_per_sample (process CPU of all
ranks and their data workers over the measured steps / samples), peak_rss_mb_per_rank,
frontier_rows_per_step (rows looked up per step, summed over ranks), halo_rows_per_step (full
mode with owned partitions: halo rows fetched per layer, summed over ranks), graph counts, the
command, date, machine and load (``os.getloadavg`` before and after).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import descendants  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "lightgcn": "configs/lightgcn/synth.yaml",
    "igrec": "configs/igrec/synthetic_groups.yaml",
    "cigf": "configs/cigf/synthetic.yaml",
}


def _proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, seconds (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Recorder:
    """Metrics sink for the engine loop: per-step seconds, samples and looked-up rows."""

    def __init__(self, inner: Any, warmup: int) -> None:
        self.inner, self.warmup = inner, warmup
        self.steps: list[tuple[float, int, int]] = []
        self.cpu_start = 0.0  # process-tree CPU seconds when the warm-up ended
        self.after_step: Any = None  # called with the number of steps done (wall-time budget)

    def step(
        self, *, samples: int, step_seconds: float, lookups: dict[str, int], **kw: Any
    ) -> None:
        self.steps.append((step_seconds, samples, sum(lookups.values())))
        if len(self.steps) == self.warmup:
            self.cpu_start = _proc_cpu(os.getpid())
        self.inner.step(samples=samples, step_seconds=step_seconds, lookups=lookups, **kw)
        if self.after_step is not None:
            self.after_step(len(self.steps))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _halo_rows(model: Any) -> int:
    """Halo rows per layer of an owned-partition full-mode model (0 when there is none)."""
    total = 0
    for v in list(vars(model).values()):
        halo = getattr(v, "halo", None)
        if halo is not None and hasattr(halo, "size"):
            total += int(halo.size)
        for w in getattr(v, "graphs", []) if isinstance(getattr(v, "graphs", None), list) else []:
            h = getattr(w, "halo", None)
            total += int(h.size) if h is not None and hasattr(h, "size") else 0
    return total


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch.distributed as dist

    from distrec.config import load_config
    from distrec.engine.loop import Trainer
    from distrec.engine.session import build_session

    total = args.warmup + args.steps
    over = [
        f"data.bundle={args.bundle}",
        f"graph.mode={args.mode}",
        "metrics.enabled=false",
        f"run.dir={args.tmp}/run",
        "train.log_every=1000000",
        "run.checkpoint_every=0",
        *args.overrides,
    ]
    cfg = load_config(args.model, str(REPO / CONFIGS[args.model]), over)
    cfg.train.max_steps = total if args.wall_minutes <= 0 else args.warmup
    t_build = time.perf_counter()
    s = build_session(args.model, cfg)
    build_s = time.perf_counter() - t_build
    tr = Trainer(s)
    rec = Recorder(tr.metrics, args.warmup)
    tr.metrics = rec
    s.wrapped.train()
    t_train = time.perf_counter()

    def run_to(steps: int) -> None:
        cfg.train.max_steps = steps
        while tr.global_step < steps:
            if tr._train_epoch():
                break
            tr.epoch, tr.step_in_epoch = tr.epoch + 1, 0

    if args.wall_minutes > 0:
        # same wall time for every setting: after the warm-up, rank 0's clock decides after every
        # step (a broadcast flag, so all ranks stop on the same step; a pace estimate from the
        # warm-up would include the cold first step and stop far too early)
        import torch

        budget = args.wall_minutes * 60

        def check(step: int) -> None:
            if step < args.warmup:
                return
            stop = torch.tensor([int(time.perf_counter() - t_train >= budget)])
            dist.broadcast(stop, 0)
            if stop.item():
                cfg.train.max_steps = step  # the loop stops after this step

        rec.after_step = check
        total = 10**9
    run_to(total)
    total = tr.global_step
    train_wall = time.perf_counter() - t_train
    cpu_all = _proc_cpu(os.getpid())
    wall = [x[0] for x in rec.steps]
    m = slice(args.warmup, total)
    out = {
        "rank": s.env.rank,
        "step_seconds": wall[m],
        "samples": int(np.sum([x[1] for x in rec.steps[m]])),
        "samples_all": int(np.sum([x[1] for x in rec.steps])),
        "wall_all": float(np.sum(wall)),
        "lookup_rows": float(np.mean([x[2] for x in rec.steps[m]])),
        "cpu_seconds": cpu_all - rec.cpu_start,
        "build_seconds": build_s,
        "train_wall_seconds": train_wall,
        "steps_done": tr.global_step,
        "halo_rows_per_layer": _halo_rows(s.model),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.wall_minutes > 0:
        from distrec.engine.runs import run_eval

        out["test"] = run_eval(s, "test")
    Path(args.tmp, f"rank{s.env.rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


def _counts(bundle: str) -> dict[str, Any]:
    m = json.loads(Path(bundle, "_manifest.json").read_text())
    c = m["counts"]
    train = c.get("interactions.train")
    return {
        "users": m["counts"]["users"],
        "items": m["counts"]["items"],
        "groups": m["counts"].get("groups", 0),
        "behaviors": m.get("behaviors"),
        "train_interactions": train,
        "train_interactions_per_behavior": {
            k: v for k, v in c.items() if k.startswith("behavior.")
        },
    }


def run_one(args: argparse.Namespace, ranks: int, port: int) -> dict[str, Any]:
    import numpy as np

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="distrec-scale-") as tmp:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
            "--master_addr=127.0.0.1", f"--master_port={port}", str(Path(__file__).resolve()),
            "--worker", "--model", args.model, "--mode", args.mode, "--bundle", args.bundle,
            "--tmp", tmp, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--wall-minutes", str(args.wall_minutes), *args.overrides,
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        print(f"[scale] {args.model} {args.mode} at {ranks} rank(s) ...", file=sys.stderr)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, env=env)
        wall = time.perf_counter() - t0
        recs = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(ranks)]
    step = np.max(np.array([r["step_seconds"] for r in recs]), axis=0)
    samples = sum(r["samples"] for r in recs)
    cpu = sum(r["cpu_seconds"] for r in recs)
    res: dict[str, Any] = {
        "model": args.model,
        "mode": args.mode,
        "ranks": ranks,
        "bundle": args.bundle,
        "config": CONFIGS[args.model],
        "overrides": list(args.overrides),
        **_counts(args.bundle),
        "measured_steps": len(step),
        "warmup_steps": args.warmup,
        "global_batch": samples // max(len(step), 1),
        "samples_per_s": samples / float(step.sum()),
        "step_p50_ms": float(np.percentile(step, 50) * 1e3),
        "step_p95_ms": float(np.percentile(step, 95) * 1e3),
        "cpu_seconds_per_sample": cpu / max(samples, 1),
        "cpu_seconds_note": "process CPU (all threads + data worker processes) of every rank over "
        "the measured steps (after the warm-up), divided by their samples",
        "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in recs],
        "frontier_rows_per_step": float(sum(r["lookup_rows"] for r in recs)),
        "halo_rows_per_step": int(sum(r["halo_rows_per_layer"] for r in recs)),
        "halo_note": "halo rows fetched per layer (full mode, owned partitions), summed over ranks",
        "session_build_seconds": [r["build_seconds"] for r in recs],
        "wall_seconds": wall,
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU ({platform.node()}), "
        "shared with other helpers' jobs",
        "load": {"before": list(load0), "after": list(os.getloadavg())},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/scale.py", *sys.argv[1:]]),
    }
    if args.wall_minutes > 0:
        res["wall_minutes"] = args.wall_minutes
        res["test"] = recs[0].get("test")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(CONFIGS), required=True)
    p.add_argument("--mode", choices=["full", "sampled"], required=True)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bundle", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--wall-minutes", type=float, default=0.0)
    p.add_argument("--suffix", default="")
    p.add_argument("--port", type=int, default=29780)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if not Path(args.bundle, "_manifest.json").exists():
        print(f"--bundle {args.bundle}: no _manifest.json (build it first)", file=sys.stderr)
        return 2
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, w in enumerate(args.ranks):
        res = run_one(args, w, args.port + 10 * i)
        path = out_dir / f"scale_{args.model}_{args.mode}_w{w}{args.suffix}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(
            f"[scale] W={w}: {res['samples_per_s']:.0f} samples/s, p50 {res['step_p50_ms']:.0f} "
            f"ms, cpu/sample {res['cpu_seconds_per_sample'] * 1e6:.0f} us, rss "
            f"{[round(x) for x in res['peak_rss_mb_per_rank']]} MB -> {path}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
