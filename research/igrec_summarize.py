"""Markdown table of IGRec seed runs: mean ± std of the test metrics at each task's best epoch.

Reads the per-run JSON results that the IGRec and LightGCN search tools wrote for
docs/results/igrec.md (``{"best": {task: {"epoch", "test"}}}``, LightGCN's with the user task
only), and the ``metrics.json`` of engine runs (``python -m distrec.sweep`` writes one run dir per
point): the test metrics of the best validation checkpoint.

    python -m research.igrec_summarize "IGRec=/tmp/igs/t_igrec_s*.json" "LightGCN=runs/lg-*/metrics.json"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _normalise(r: dict) -> dict:
    """Any of the three result shapes -> ``{"best": {task: {"epoch", "test": {task/metric}}}}``."""
    if "best" in r:
        return r
    if "select_metric" in r:  # engine metrics.json: one best checkpoint for every task
        test = r.get("test", {})
        tasks = sorted({k.split("/")[0] for k in test if "/" in k}) or ["user"]
        step = r.get("best_step")
        epoch = next((h["epoch"] + 1 for h in r.get("valid", []) if h["step"] == step), "-")
        flat = {k if "/" in k else f"user/{k}": v for k, v in test.items()}
        return {"best": {t: {"epoch": epoch, "test": flat} for t in tasks}}
    return {"best": {"user": {"epoch": r["epoch"], "test": {
        f"user/{k}": v for k, v in r["test"].items()}}}}  # fmt: skip


def summarize(rows: list[str]) -> str:
    """Markdown table of mean +- std (population std over seeds) of the test metrics at each
    task's best validation epoch. ``rows``: ``label=glob`` of result files."""
    import glob

    metrics = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
    lines = [
        "| model | seeds | epochs (best user / group) | user R@5 | user R@10 | user N@5 | user N@10 "
        "| group R@5 | group R@10 | group N@5 | group N@10 |",
        "|---|---|---|" + "---|" * 8,
    ]
    for row in rows:
        label, _, pattern = row.rpartition("=")
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"{row}: no file matches {pattern}")
        res = [json.loads(Path(f).read_text()) for f in files]
        res = [_normalise(r) for r in res]
        cells, epochs = [], []
        for task in ("user", "group"):
            done = [r for r in res if task in r["best"] and "test" in r["best"][task]]
            epochs.append("/".join(str(r["best"][task]["epoch"]) for r in done) or "-")
            for m in metrics:
                v = np.array([r["best"][task]["test"][f"{task}/{m}"] for r in done])
                if len(v) == 0:
                    cells.append("-")
                elif len(v) == 1:
                    cells.append(f"{v[0]:.4f}")
                else:
                    cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        lines.append(f"| {label} | {len(res)} | {' ; '.join(epochs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows", nargs="+", help="label=glob")
    print(summarize(ap.parse_args(argv).rows))


if __name__ == "__main__":
    main()
