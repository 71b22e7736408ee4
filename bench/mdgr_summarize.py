"""Markdown tables for docs/results/mdgr.md from the runs' metrics.json files.

    python bench/mdgr_summarize.py --runs runs --data ml100k --seeds 0 1 2

Reads ``<runs>/mdgr-<data>-<variant>-s<seed>/metrics.json`` (written by ``distrec.train``):
test metrics at the best-validation step, mean +- sample std over the seeds found, the per-seed
values, and the validation AUC per epoch (mean over seeds) as the convergence curve.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

VARIANTS = {"mdgr": "MDGR", "dgc": "MDGR-DGC", "w": "MDGR-W", "gru4rec": "GRU4Rec"}


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default="runs")
    p.add_argument("--data", default="ml100k")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--metrics", nargs="+", default=["auc", "recall@50", "ndcg@50"])
    p.add_argument("--curve-metric", default="auc")
    args = p.parse_args(argv)
    found: dict[str, dict[int, dict]] = {}
    for v in VARIANTS:
        for s in args.seeds:
            f = Path(args.runs) / f"mdgr-{args.data}-{v}-s{s}" / "metrics.json"
            r = json.loads(f.read_text()) if f.exists() else {}
            if "test" in r:  # finished runs only
                found.setdefault(v, {})[s] = r
    head = " | ".join(f"test {m}" for m in args.metrics)
    print(f"| variant | seeds | {head} | best epoch per seed |")
    print("|---" * (len(args.metrics) + 3) + "|")
    for v, runs in found.items():
        cells = [_fmt([r["test"][m] for r in runs.values()]) for m in args.metrics]
        best = []
        for r in runs.values():
            ep = [e["epoch"] for e in r["valid"] if e["step"] == r["best_step"]]
            best.append(str(ep[0] + 1) if ep else "?")
        seeds = ",".join(str(s) for s in runs)
        print(f"| {VARIANTS[v]} | {seeds} | {' | '.join(cells)} | {','.join(best)} |")
    print()
    m0 = args.metrics[0]
    print(f"Per seed, test {m0}:")
    print()
    print("| variant | " + " | ".join(f"s{s}" for s in args.seeds) + " |")
    print("|---" * (len(args.seeds) + 1) + "|")
    for v, runs in found.items():
        row = [f"{runs[s]['test'][m0]:.4f}" if s in runs else "-" for s in args.seeds]
        print(f"| {VARIANTS[v]} | " + " | ".join(row) + " |")
    print()
    cm = args.curve_metric
    n_ep = max(len(r["valid"]) for runs in found.values() for r in runs.values())
    print(f"Validation {cm} per epoch (mean over the seeds found):")
    print()
    print("| variant | " + " | ".join(f"ep {e + 1}" for e in range(n_ep)) + " |")
    print("|---" * (n_ep + 1) + "|")
    for v, runs in found.items():
        row = []
        for e in range(n_ep):
            xs = [r["valid"][e]["valid"][cm] for r in runs.values() if len(r["valid"]) > e]
            row.append(f"{statistics.mean(xs):.4f}" if xs else "-")
        print(f"| {VARIANTS[v]} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
