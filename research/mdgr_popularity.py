"""How much of the chunks protocol does item popularity alone solve? (No training.)

    python -m research.mdgr_popularity --bundle data/bundles/ml100k

Scores every query's candidates (its held-out positives followed by its sampled unseen
negatives, ``eval/chunks/split=valid|test``) by the item's count in the training chunks (inputs
and targets of ``split=train``) and reports the engine's sampled-protocol metrics: per-query AUC
(each positive against the query's negatives, ties count half; mean over positives, then over
queries) and Recall@K (share of the positives in the top K of the candidates).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.parquet as pq


def _split(bundle: str, split: str):  # type: ignore[no-untyped-def]
    return pq.read_table(f"{bundle}/eval/chunks/split={split}").to_pydict()


def evaluate(pop: np.ndarray, rows: dict, k: int, rng: np.random.Generator) -> dict[str, float]:
    aucs, recalls = [], []
    for t, c in zip(rows["targets"], rows["candidates"], strict=True):
        pos, neg = pop[np.array(t)], pop[np.array(c)]
        less = (pos[:, None] > neg[None, :]).sum(1) + 0.5 * (pos[:, None] == neg[None, :]).sum(1)
        aucs.append(float((less / len(neg)).mean()))
        s = np.concatenate([pos, neg]) + 1e-6 * rng.random(len(pos) + len(neg))  # random ties
        top = np.argsort(-s)[:k]
        recalls.append(float((top < len(pos)).sum() / len(pos)))
    n = len(aucs)
    return {
        "auc": float(np.mean(aucs)),
        # spread of the per-query AUC and the standard error of its mean over the n queries
        "auc_query_std": float(np.std(aucs, ddof=1)),
        "auc_se": float(np.std(aucs, ddof=1) / np.sqrt(n)),
        f"recall@{k}": float(np.mean(recalls)),
        "queries": n,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", default="data/bundles/ml100k")
    p.add_argument("--k", type=int, default=50)
    args = p.parse_args(argv)
    train = _split(args.bundle, "train")
    items = [i for r in train["input"] + train["targets"] for i in r]
    pop = np.bincount(np.array(items), minlength=1 + max(items)).astype(np.float64)
    out = {}
    for split in ("valid", "test"):
        rows = _split(args.bundle, split)
        hi = max(max(max(r) for r in rows["targets"]), max(max(r) for r in rows["candidates"]))
        if hi >= len(pop):
            pop = np.concatenate([pop, np.zeros(hi + 1 - len(pop))])
        out[split] = evaluate(pop, rows, args.k, np.random.default_rng(0))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
