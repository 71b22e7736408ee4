"""MDGR training throughput at 1 and 2 ranks for m = 1, 5, 9 dynamic-graph-clustering iterations.

    OMP_NUM_THREADS=1 python bench/mdgr_bench.py --ranks 1 2 --iterations 1 5 9 --steps 30

Reuses :mod:`bench.train_bench` (real engine session under torchrun: sharding, fused sparse
optimizer, data prefetch; per-step wall time is the slowest rank's) once per (ranks, m) and
writes ``bench/results/mdgr_throughput_<R>r.json``: one entry per m with global train samples/s
(one sample = one (history, positive, negative) triple of the chunks protocol) and step times.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MACHINE = "2-core CPU sandbox shared with other jobs"


def _train_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train_bench", REPO / "bench" / "train_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/mdgr/ml100k.yaml")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iterations", type=int, nargs="+", default=[1, 5, 9])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--port", type=int, default=29820)
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = p.parse_args(argv)
    tb = _train_bench()
    command = " ".join(["OMP_NUM_THREADS=1 python bench/mdgr_bench.py", *sys.argv[1:]])
    port = args.port
    for ranks in args.ranks:
        runs = []
        for m in args.iterations:
            ns = argparse.Namespace(
                model="mdgr",
                config=args.config,
                steps=args.steps,
                warmup=args.warmup,
                overrides=[*args.overrides, f"model.iterations={m}"],
            )
            load0 = os.getloadavg()[0]
            res = tb.run_one(ns, ranks, port)
            port += 1
            entry = {
                "iterations": m,
                "samples_per_s": res["samples_per_s"],
                "step_time_p50_ms": res["step_time_p50_ms"],
                "step_time_p95_ms": res["step_time_p95_ms"],
                "data_wait_share": res["data_wait_share"],
                "peak_rss_mb_per_rank": res["peak_rss_mb_per_rank"],
                # 1-min load average before/after: the box runs other jobs (and our training)
                "loadavg_1m_before_after": [load0, os.getloadavg()[0]],
            }
            runs.append(entry)
            print(json.dumps({"ranks": ranks, **entry}), flush=True)
        out = {
            "model": "mdgr",
            "config": args.config,
            "overrides": list(args.overrides),
            "ranks": ranks,
            "measured_steps": args.steps,
            "warmup_steps": args.warmup,
            "global_batch": "data.batch_size of the config (split evenly over the ranks)",
            "runs": runs,
            "machine": MACHINE,
            "date": datetime.date.today().isoformat(),
            "command": command,
        }
        path = Path(args.out_dir) / f"mdgr_throughput_{ranks}r.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
