"""One-process engine run vs the former single-process search tool, back to back (issue #18).

Times whole processes (start to exit) of

* ``search``: ``python -m distrec.models.igrec.standalone`` (removed in #18; run it from a checkout
  that still has it, ``--search-tree``, e.g. ``git worktree add /tmp/old 96be9ec``), and
* ``engine``: ``python -m distrec.train igrec --config CONFIG`` without torchrun (``--engine-tree``),

each with ``--short`` and ``--long`` epochs and one validation + one test evaluation at the end,
alternating the tools within each repetition so both see the same box load. The per-epoch cost is
the slope between the two epoch counts, ``fixed`` (start-up, evaluation, exit) the intercept, for
the wall time and for the process's CPU time (user + sys; on a shared box the steadier figure).
Writes a JSON with the runs, the medians, the command, the date, the machine and the load.

    OMP_NUM_THREADS=1 python bench/one_process.py --search-tree /tmp/old --reps 3 \\
        --out bench/results/one_process_igrec_mafengwo.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _commands(tool: str, epochs: int, a: argparse.Namespace, run_dir: str) -> list[str]:
    py = [sys.executable, "-m"]
    if tool == "search":
        return py + [
            "distrec.models.igrec.standalone",
            "--bundle", a.bundle, "--epochs", str(epochs), "--eval-every", str(epochs),
            "--lr", "0.01", "--seed", "0", "model.eta1=0.9",
        ]  # fmt: skip
    return py + [
        "distrec.train", "igrec", "--config", a.config, f"data.bundle={a.bundle}",
        f"train.epochs={epochs}", f"train.eval_every={epochs}", f"run.dir={run_dir}",
    ]  # fmt: skip


def _run(tool: str, epochs: int, a: argparse.Namespace) -> dict[str, Any]:
    tree = a.search_tree if tool == "search" else a.engine_tree
    with tempfile.TemporaryDirectory(prefix="one_process_") as tmp:
        cmd = _commands(tool, epochs, a, str(Path(tmp) / "run"))
        load = os.getloadavg()[0]
        log = Path(tmp) / "stderr.txt"
        with open(log, "w") as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.DEVNULL, stderr=err)
            # wait4: the child's own CPU time (user + sys, all its threads), which the other
            # processes on a loaded box disturb far less than the wall time
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{tool} failed ({status}):\n{log.read_text()[-3000:]}")
    return {
        "tool": tool,
        "epochs": epochs,
        "wall_s": round(wall, 2),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "max_rss_mb": round(ru.ru_maxrss / 1024),
        "load1": load,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--search-tree", required=True, help="checkout with the search tool")
    p.add_argument("--engine-tree", default=str(REPO))
    p.add_argument("--bundle", default=str(REPO / "data/bundles/mafengwo"))
    p.add_argument("--config", default="", help="default: configs/igrec/mafengwo.yaml of the tree")
    p.add_argument("--short", type=int, default=1)
    p.add_argument("--long", type=int, default=6)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "bench/results/one_process_igrec_mafengwo.json"))
    a = p.parse_args(argv)
    a.config = a.config or str(Path(a.engine_tree) / "configs/igrec/mafengwo.yaml")
    a.bundle, a.config = str(Path(a.bundle).resolve()), str(Path(a.config).resolve())
    runs: list[dict[str, Any]] = []
    for rep in range(a.reps):
        for epochs in (a.short, a.long):
            # alternate which tool goes first, so neither always meets the same neighbour load
            order = ("search", "engine") if (rep + epochs) % 2 == 0 else ("engine", "search")
            for tool in order:
                r = _run(tool, epochs, a) | {"rep": rep}
                print(json.dumps(r), flush=True)
                runs.append(r)
    summary: dict[str, dict[str, float]] = {}
    for tool in ("search", "engine"):
        summary[tool] = {}
        for what in ("wall_s", "cpu_s"):
            med = {
                e: statistics.median(
                    float(r[what]) for r in runs if r["tool"] == tool and r["epochs"] == e
                )
                for e in (a.short, a.long)
            }
            per_epoch = (med[a.long] - med[a.short]) / (a.long - a.short)
            summary[tool] |= {
                f"{what}_median_{a.short}ep": med[a.short],
                f"{what}_median_{a.long}ep": med[a.long],
                f"{what}_per_epoch": round(per_epoch, 2),
                f"{what}_fixed": round(med[a.short] - a.short * per_epoch, 2),
            }
    out = {
        "what": "IGRec MaFengWo: search tool vs one-process engine run, whole-process wall time",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load1_min_max": [min(r["load1"] for r in runs), max(r["load1"] for r in runs)],
        "summary": summary,
        "runs": runs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
