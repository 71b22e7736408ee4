"""Markdown tables for docs/results/mdgr.md from the runs' metrics.json files.

    python -m research.mdgr_summarize --runs runs --data ml100k --seeds 0 1 2

Reads ``<runs>/mdgr-<data>-<variant>-s<seed>/metrics.json`` (written by ``distrec.train``):
test metrics at the best-validation step, mean +- sample std over the seeds found, the per-seed
values, and the validation AUC per epoch (mean over seeds) as the convergence curve.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from research.seed_stats import mean_std

VARIANTS = {
    "mdgr": "MDGR",
    "dgc": "MDGR-DGC",
    "w": "MDGR-W",
    "p": "MDGR-P",
    "t": "MDGR-T",
    "pt": "MDGR-PT",
    "gru4rec": "GRU4Rec",
}


def _fmt(xs: list[float]) -> str:
    return mean_std(xs) if xs else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default="runs")
    p.add_argument("--data", default="ml100k")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--metrics", nargs="+", default=["auc", "recall@50", "ndcg@50"])
    p.add_argument("--curve-metric", default="auc")
    p.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        help="research/mdgr_eval_candidates.py outputs: add the paired per-query comparison",
    )
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
    if args.candidates:
        paired(args.candidates)
    return 0


def paired(files: list[str]) -> None:
    """MDGR minus each other variant, test AUC per query (same queries, same seed), averaged
    over the seeds both have: mean difference and its standard error over the queries."""
    import numpy as np

    per: dict[tuple[str, int], np.ndarray] = {}
    for f in files:
        for r in json.loads(Path(f).read_text())["runs"]:
            m = re.fullmatch(r"mdgr-[^-]+-(\w+)-s(\d+)", Path(r["run"]).name)
            if m:  # runs named like the table's (others, e.g. *-pre0976838, are skipped)
                per[(m[1], int(m[2]))] = np.array(r["test"]["per_query_free_auc"])
    print()
    print("Paired per-query test AUC, MDGR minus variant (engine scoring; mean over the seeds")
    print("both have, then mean and standard error over the queries):")
    print()
    print("| variant | seeds | mean diff | s.e. over queries | queries MDGR better / worse |")
    print("|---|---|---|---|---|")
    for v in ("dgc", "w", "gru4rec"):
        seeds = sorted(s for (vv, s) in per if vv == v and ("mdgr", s) in per)
        if not seeds:
            continue
        d = np.mean([per[("mdgr", s)] - per[(v, s)] for s in seeds], axis=0)
        se = d.std(ddof=1) / np.sqrt(len(d))
        print(
            f"| {VARIANTS[v]} | {','.join(map(str, seeds))} | {d.mean():+.4f} | {se:.4f} | "
            f"{int((d > 0).sum())} / {int((d < 0).sum())} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
