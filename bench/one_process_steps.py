"""Where a one-process engine run spends its time, against the plain loop the search tool ran.

In one process (imports done once, so they do not count), for ``--model`` on ``--config``:

* ``engine``: :func:`~distrec.engine.session.build_session` (world of one: DMP, sharded tables,
  table init, combined optimizer, data) and epochs of :class:`~distrec.engine.loop.Trainer`;
* ``plain``: what the removed search tool did, the same model class on the CPU unsharded, the
  same data adapter and ``torch.optim.Adam`` over every parameter, one
  ``loss, _ = model(batch); zero_grad; backward; step`` per batch.

Epochs alternate between the two, so both see the same box load. CPU time is the process's
(user + sys, all threads), the steadier figure on a shared box; wall time beside it. JSON out.

    OMP_NUM_THREADS=1 python bench/one_process_steps.py --epochs 5 \\
        --out bench/results/one_process_steps_igrec_mafengwo.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _since(t: tuple[float, float]) -> dict[str, float]:
    c, w = _clock()
    return {"cpu_s": round(c - t[0], 3), "wall_s": round(w - t[1], 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="igrec")
    p.add_argument("--config", default=str(REPO / "configs/igrec/mafengwo.yaml"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument(
        "--out", default=str(REPO / "bench/results/one_process_steps_igrec_mafengwo.json")
    )
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    from distrec.config import load_config
    from distrec.data.schema import Manifest
    from distrec.distributed.env import destroy_distributed
    from distrec.engine.loop import Trainer
    from distrec.engine.session import build_session
    from distrec.models.registry import get_spec

    tmp = tempfile.mkdtemp(prefix="one_process_steps_")
    over = [f"run.dir={tmp}/run", "metrics.enabled=false", *a.overrides]
    cfg = load_config(a.model, a.config, over)
    spec = get_spec(a.model)
    load = [os.getloadavg()[0]]

    t = _clock()
    held = [Trainer(build_session(a.model, cfg))]  # dropped before destroy_distributed
    build_engine = _since(t)

    t = _clock()
    torch.manual_seed(cfg.run.seed)
    manifest = Manifest.load(cfg.data.bundle)
    model = spec.build_model(cfg, manifest, torch.device("cpu"))
    data = spec.build_data(cfg, cfg.data.bundle, 0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    build_plain = _since(t)

    def plain_epoch(epoch: int) -> int:
        model.train()
        n = 0
        for batch in data.train_batches(epoch):
            loss, _ = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += 1
        return n

    def engine_epoch(epoch: int) -> int:
        trainer = held[0]
        trainer.epoch, trainer.step_in_epoch = epoch, 0
        trainer._train_epoch()
        return trainer.step_in_epoch

    epochs: dict[str, list[dict[str, Any]]] = {"engine": [], "plain": []}
    for e in range(a.epochs):
        order = (("engine", engine_epoch), ("plain", plain_epoch))
        for name, fn in order if e % 2 == 0 else order[::-1]:
            load.append(os.getloadavg()[0])
            t = _clock()
            steps = fn(e)
            epochs[name].append({"epoch": e, "steps": steps, **_since(t)})
            print(name, json.dumps(epochs[name][-1]), file=sys.stderr, flush=True)
    t = _clock()
    from distrec.engine.runs import run_eval

    run_eval(held[0].s, "valid")
    eval_engine = _since(t)

    def med(name: str, key: str) -> float:
        # the first epoch of each warms allocator and caches: left out of the medians
        rows = epochs[name][1:] or epochs[name]
        return round(statistics.median(r[key] / r["steps"] for r in rows), 4)

    out = {
        "what": f"{a.model}: one-process engine vs the plain single-process loop, in one process",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load1_min_max": [round(min(load), 2), round(max(load), 2)],
        "build": {"engine": build_engine, "plain": build_plain},
        "per_step_median": {
            n: {"cpu_s": med(n, "cpu_s"), "wall_s": med(n, "wall_s")} for n in ("engine", "plain")
        },
        "engine_valid_eval": eval_engine,
        "epochs": epochs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("build", "per_step_median", "load1_min_max")}, indent=1))
    held.clear()
    destroy_distributed()


if __name__ == "__main__":
    main()
