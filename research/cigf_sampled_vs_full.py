"""Full vs sampled CIGF runs on JD, 3 seeds each: per-run figures, means, relative differences.

Issue #14's "still good" check: the sampled settings' mean test HR@10 within 2 % (relative) of
full mode's. Each run directory holds what ``/tmp/c_runs/run1.sh`` wrote beside the engine's
``metrics.json``: ``cmd.txt`` (the command), ``timing.txt`` (start / end ``uptime`` lines,
``wall_s``). Directories are grouped by name without the ``_s<seed>`` suffix; the group named
``--reference`` (default ``full``) is the reference.

    python -m research.cigf_sampled_vs_full /tmp/c_runs/{full,samp2010}_s[012] \
        --out bench/results/cigf_jd_sampled_vs_full_2026-12-04.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from research.seed_stats import mean_std

METRICS = ("hr@10", "ndcg@10")


def read_run(run: Path) -> dict[str, Any] | None:
    """One run's command, seed, best valid / test HR@10 and NDCG@10, wall and load; None while
    it has no test metrics (still training)."""
    info = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    if "test" not in info:
        return None
    timing = (run / "timing.txt").read_text().splitlines()
    loads = [ln.split("load average:")[-1].strip() for ln in timing if "load average" in ln]
    wall = next(float(ln.split()[1]) for ln in timing if ln.startswith("wall_s"))
    best = next(v for v in info["valid"] if v["step"] == info["best_step"])["valid"]
    return {
        "name": run.name,
        "seed": int(run.name.rsplit("_s", 1)[-1]),
        "command": (run / "cmd.txt").read_text().strip(),
        "best_step": info["best_step"],
        "steps": info["global_step"],
        "valid": {m: best[m] for m in METRICS},
        "test": {m: info["test"][m] for m in METRICS},
        "wall_s": round(wall, 1),
        "load_start": loads[0] if loads else "",
        "load_end": loads[-1] if len(loads) > 1 else "",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--reference", default="full")
    p.add_argument("--out", type=Path)
    p.add_argument("--extra", type=Path, help="JSON object merged into the output (rows, notes)")
    args = p.parse_args()
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in args.runs:
        r = read_run(run)
        if r is not None:
            groups[re.sub(r"_s\d+$", "", run.name)].append(r)
    summary: dict[str, Any] = {}
    for name, rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        summary[name] = {
            "seeds": [r["seed"] for r in rs],
            **{f"test {m}": mean_std([r["test"][m] for r in rs]) for m in METRICS},
            **{f"valid {m}": mean_std([r["valid"][m] for r in rs]) for m in METRICS},
            **{f"test {m} mean": float(np.mean([r["test"][m] for r in rs])) for m in METRICS},
            "wall_s_mean": round(sum(r["wall_s"] for r in rs) / len(rs), 1),
        }
    ref = summary.get(args.reference)
    for name, s in summary.items():
        if ref is not None and name != args.reference:
            for m in METRICS:
                a, b = s[f"test {m} mean"], ref[f"test {m} mean"]
                s[f"test {m} rel. diff vs {args.reference}"] = (a - b) / b
    print(
        "| run | seed | valid HR@10 | valid NDCG@10 | test HR@10 | test NDCG@10 | best step | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rs in groups.values():
        for r in rs:
            v, t = r["valid"], r["test"]
            print(
                f"| {r['name']} | {r['seed']} | {v['hr@10']:.4f} | {v['ndcg@10']:.4f} | "
                f"{t['hr@10']:.4f} | {t['ndcg@10']:.4f} | {r['best_step']} / {r['steps']} | "
                f"{r['wall_s']:.0f} |"
            )
    print(json.dumps(summary, indent=2))
    if args.out:
        doc: dict[str, Any] = {
            "runs": [r for rs in groups.values() for r in rs],
            "summary": summary,
            "reference": args.reference,
        }
        if args.extra:
            doc.update(json.loads(args.extra.read_text()))
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
