"""Data-wait share of training at 2 ranks for every model (#15): the engine's own epoch line
("data wait X%": time the trainer blocked on the next batch / epoch time) from real torchrun runs.

    flock -x /work/coord/box.lock python bench/data_wait.py [--steps 40] [--repeats 3] --models mf

Updates bench/results/data_wait_w2.json: per model the command, date, load (os.getloadavg) before
and after, every repeat, and the median data wait % and samples/s/rank. Configs are the models' shipped ones on the
bundles under data/bundles (built by spark_jobs), with train.max_steps so that a run is short.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNS: dict[str, list[str]] = {
    "mf": ["configs/mf/mafengwo.yaml"],
    "lightgcn": ["configs/lightgcn/mafengwo.yaml"],
    "igrec": ["configs/igrec/mafengwo.yaml"],
    "cigf": ["configs/cigf/synthetic.yaml", "graph.mode=full", "data.batch_size=1024"],
    "dismir": ["configs/dismir/gowalla.yaml"],
    "mdgr": ["configs/mdgr/ml100k.yaml"],
}
LINE = re.compile(r"epoch \d+: (\d+) steps, loss \S+, (\d+) samples/s/rank, data wait ([\d.]+)%")


def cigf_bundle(root: Path) -> Path:
    """A 4-behavior bundle (written with pyarrow, tests.helpers.bundles) for CIGF."""
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(root / "mb", users=3000, items=800, per_user=20,
                             behaviors=("view", "cart", "fav", "buy"), cooc=False)  # fmt: skip


def run(model: str, args: list[str], steps: int, port: int, tmp: Path) -> dict:
    cfg, *extra = args
    if model == "cigf":
        extra.append(f"data.bundle={cigf_bundle(tmp)}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "distrec.train", model,
           "--config", cfg, f"run.dir={tmp / model}", f"train.max_steps={steps}",
           "train.epochs=1", "metrics.enabled=false", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    text = p.stdout + p.stderr
    m = LINE.findall(text)
    out = {"config": cfg, "overrides": extra, "returncode": p.returncode}
    if p.returncode or not m:
        out["error"] = text[-1500:]
        return out
    n, sps, wait = m[-1]
    out.update({"steps": int(n), "samples_per_s_rank": int(sps), "data_wait_pct": float(wait)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(RUNS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "data_wait_w2.json"))
    a = ap.parse_args()
    path = Path(a.out)
    # one invocation per model keeps each exclusive hold of the box short; results accumulate
    out = json.loads(path.read_text()) if path.exists() else {"models": {}}
    out.update(
        machine=f"{platform.node()} {os.cpu_count()} cores, 2 ranks x 1 thread (gloo)",
        protocol="run under flock -x /work/coord/box.lock, one invocation per model; "
        "data_wait_pct = median over repeats of the engine's epoch line",
    )
    with tempfile.TemporaryDirectory() as t:
        for k, model in enumerate(a.models):
            load0 = os.getloadavg()
            reps = [
                run(model, list(RUNS[model]), a.steps, 29760 + 8 * k + r, Path(t))
                for r in range(a.repeats)
            ]
            ok = [r for r in reps if "error" not in r]
            rec: dict = {
                "command": " ".join([sys.executable, *sys.argv]),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "uptime_load_before": load0,
                "uptime_load_after": os.getloadavg(),
                "repeats": reps,
            }
            if ok:
                rec.update(
                    data_wait_pct=statistics.median(r["data_wait_pct"] for r in ok),
                    samples_per_s_rank=statistics.median(r["samples_per_s_rank"] for r in ok),
                    steps=ok[0]["steps"],
                    config=ok[0]["config"],
                    overrides=ok[0]["overrides"],
                )
            out["models"][model] = rec
            print(model, {k: v for k, v in rec.items() if k != "repeats"}, flush=True)
            for r in reps:
                if "error" in r:
                    print(r["error"][-600:], flush=True)
    path.write_text(json.dumps(out, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
