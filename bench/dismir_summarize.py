"""Summarise bench/dismir_experiments.py JSON lines as Markdown: mean ± std over seeds.

python bench/dismir_summarize.py docs/results/dismir_gowalla.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

METRICS = ("recall@20", "ndcg@20", "hr@20", "recall@50", "ndcg@50", "hr@50")
TABLE4 = ("similarity", "min", "max", "std")


def main(path: str) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        runs[r["variant"]].append(r)
    print("| variant | seeds | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for v, rs in runs.items():
        cells = []
        for m in METRICS:
            x = np.array([r["test"][m] for r in rs])
            cells.append(f"{x.mean():.4f} ± {x.std(ddof=1) if len(x) > 1 else 0:.4f}")
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


if __name__ == "__main__":
    main(sys.argv[1])
