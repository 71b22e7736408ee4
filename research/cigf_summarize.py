"""Mean ± sample std over seeds of training runs' test metrics, as a Markdown table.

    python -m research.cigf_summarize runs/cigf-jd-d64-*-s[012]

Reads each RUN/metrics.json (written by ``distrec.train``: test metrics at the checkpoint that
was best on validation). Runs are grouped by their directory name without the ``-s<seed>``
suffix.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from research.seed_stats import mean_std


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--metrics", nargs="+", default=["hr@10", "ndcg@10", "recall@10", "hr@20"])
    args = p.parse_args()
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in args.runs:
        path = run / "metrics.json"
        info = json.loads(path.read_text()) if path.exists() else {}
        if "test" not in info:  # still training, or killed before its test evaluation
            print(f"skipped {run}: no test metrics in metrics.json", file=sys.stderr)
            continue
        info["_seed"] = run.name.rsplit("-s", 1)[-1]
        groups[re.sub(r"-s\d+$", "", run.name)].append(info)
    cols = " | ".join(f"test {m}" for m in args.metrics)
    select = next(iter(groups.values()))[0]["select_metric"] if groups else "metric"
    print(f"| runs | seeds | valid {select} (best) | {cols} | best step per seed |")
    print("|---|---|---|" + "---|" * len(args.metrics) + "---|")
    for name, rs in groups.items():
        cells = " | ".join(mean_std([r["test"][m] for r in rs]) for m in args.metrics)
        steps = ",".join(str(r["best_step"]) for r in rs)
        seeds = ",".join(r["_seed"] for r in rs)
        print(
            f"| {name} | {seeds} | {mean_std([r['best_valid'] for r in rs])} | {cells} | {steps} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
