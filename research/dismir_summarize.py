"""Summarise research/dismir_experiments.py JSON lines as Markdown: mean ± std over seeds.

Runs are grouped by variant plus their extra ``--set`` overrides and learning rate.
``--search`` prints one row per run with its validation metrics instead (for a grid on seed 0).

python -m research.dismir_summarize docs/results/dismir_gowalla.jsonl
python -m research.dismir_summarize --search docs/results/dismir_gowalla_search.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from research.seed_stats import mean_std

METRICS = ("recall@20", "ndcg@20", "hr@20", "recall@50", "ndcg@50", "hr@50")
TABLE4 = ("similarity", "min", "max", "std")


def label(r: dict) -> str:
    """Variant name plus the overrides that distinguish runs of the same variant."""
    extra = [s.split(".", 1)[-1] for s in r.get("set", [])]
    if "lr" in r and r["variant"] != "popularity":
        extra.append(f"lr={r['lr']:g}")
    return r["variant"] + (f" ({', '.join(extra)})" if extra else "")


def search_table(runs: list[dict]) -> None:
    print("| run | best epoch / epochs run | valid recall@20 | valid ndcg@20 | seconds |")
    print("|---|---|---|---|---|")
    for r in runs:
        v = r["valid"]
        ep = f"{r.get('best_epoch')} / {r.get('epochs_run', '?')}"
        print(
            f"| {label(r)} | {ep} | {v['recall@20']:.4f} | {v['ndcg@20']:.4f} "
            f"| {r.get('train_seconds')} |"
        )


def seed_table(runs_list: list[dict]) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    for r in runs_list:
        runs[label(r)].append(r)
    print("| variant | seeds | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for v, rs in runs.items():
        cells = []
        for m in METRICS:
            cells.append(mean_std([r["test"][m] for r in rs]))
        print(f"| {v} | {len(rs)} | " + " | ".join(cells) + " |")
    print()
    print("| variant | Similarity | MIN/MAX (% of a user's items) | STD | best epochs |")
    print("|---|---|---|---|---|")
    for v, rs in runs.items():
        if "table4" not in rs[0]:
            continue
        t = {k: np.mean([r["table4"][k] for r in rs]) for k in TABLE4}
        ep = ",".join(str(r["best_epoch"]) for r in rs)
        print(
            f"| {v} | {t['similarity']:.1f} | {t['min']:.1f}/{t['max']:.1f} | {t['std']:.1f} | {ep} |"
        )
    partition_table(runs)


def partition_table(runs: dict[str, list[dict]]) -> None:
    """Item-partition statistics of the item table (runs that recorded them): Theorem 4's exact
    loss and the same-group share of co-occurrence weight, before and after training."""
    rows = {v: rs for v, rs in runs.items() if "partition" in rs[0]}
    if not rows:
        return
    print()
    print(
        "| variant | partition loss (exact), init -> trained | same-group co-occurrence share, "
        "init -> trained | chance | group entropy / log K |"
    )
    print("|---|---|---|---|---|")
    for v, rs in rows.items():
        p, i = [r["partition"] for r in rs], [r["partition_init"] for r in rs]
        print(
            f"| {v} | {np.mean([x['partition_ce'] for x in i]):.2f} -> "
            f"{mean_std([x['partition_ce'] for x in p], '.2f')} | "
            f"{np.mean([x['same_group'] for x in i]):.4f} -> "
            f"{mean_std([x['same_group'] for x in p])} | "
            f"{np.mean([x['same_group_chance'] for x in p]):.4f} | "
            f"{np.mean([x['group_entropy'] for x in p]):.3f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--search", action="store_true", help="one row per run, validation metrics")
    args = p.parse_args()
    with open(args.path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if args.search:
        search_table(runs)
    else:
        seed_table(runs)


if __name__ == "__main__":
    main()
