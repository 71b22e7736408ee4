"""Re-evaluate trained MDGR runs on the chunks protocol with target-aware candidate scoring.

    OMP_NUM_THREADS=1 python bench/mdgr_eval_candidates.py --out docs/results/x.json \
        runs/mdgr-ml100k-mdgr-s0 runs/mdgr-ml100k-w-s0 ...

Why: the engine's sampled evaluation (``distrec.eval.ranking``) scores every query against all
items with ``model.score`` and then masks to the candidates. For MDGR ``score`` is the
target-free path (the query vector of eq. 11 is the mean of the encoded history), while training
(``forward``) runs one target-aware DGC pass per (sequence, candidate) with
``score_candidates``. This script loads each run's ``best`` checkpoint and scores each query's
own candidates (positives followed by its sampled negatives) both ways:

* ``free``: ``model.score`` (what the engine reports; a consistency check of this script),
* ``aware``: ``model.score_candidates``, one DGC pass per candidate (eq. 11 as trained).

Per query: AUC (each positive against the query's negatives, ties count half, averaged over the
positives) and Recall@50 (share of the positives in the top 50 of the candidates). It writes
the per-query AUCs too, so that variants can be compared pairwise on the same queries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _metrics(scores: np.ndarray, n_pos: int, k: int) -> tuple[float, float]:
    pos, neg = scores[:n_pos], scores[n_pos:]
    less = (pos[:, None] > neg[None, :]).sum(1) + 0.5 * (pos[:, None] == neg[None, :]).sum(1)
    top = np.argsort(-scores, kind="stable")[:k]
    return float((less / max(len(neg), 1)).mean()), float((top < n_pos).sum() / n_pos)


def evaluate_run(run: str, splits: list[str], k: int) -> dict:
    from distrec.eval.ranking import compute_item_reps
    from distrec.evaluate import load_for_eval

    s = load_for_eval(run, "best", [])
    model, data = s.model, s.data
    model.eval()
    n = int(s.manifest.num_items)
    out: dict = {"run": run}
    out["variant"] = {
        "variant": s.cfg.model.variant,
        "dgc": s.cfg.model.dgc,
        "weights": s.cfg.model.weights,
        "seed": s.cfg.run.seed,
    }
    with torch.no_grad():
        model.prepare_eval()
        items = compute_item_reps(model, data, 0, n, 4096, n, 1).float()  # [N, D]
        for split in splits:
            t0 = time.perf_counter()
            per: dict[str, list[float]] = {
                "free_auc": [],
                "aware_auc": [],
                "free_recall": [],
                "aware_recall": [],
            }
            for q in data.eval_queries(split):
                qrep = model.query(q.batch)
                assert q.candidates is not None, "chunks protocol bundles only"
                free_all = model.score(qrep, items)  # [b, N]
                for i, (t, c) in enumerate(zip(q.targets, q.candidates, strict=True)):
                    ids = torch.tensor(c, dtype=torch.int64)
                    free = free_all[i, ids].double().numpy()
                    if hasattr(model, "score_candidates"):
                        aware_t = model.score_candidates(qrep[i : i + 1], items[ids].unsqueeze(0))
                        aware = aware_t[0].double().numpy()
                    else:
                        aware = free
                    for kind, sc in (("free", free), ("aware", aware)):
                        a, r = _metrics(sc, len(t), k)
                        per[f"{kind}_auc"].append(a)
                        per[f"{kind}_recall"].append(r)
            res: dict[str, object] = {key: float(np.mean(v)) for key, v in per.items()}
            res["queries"] = len(per["free_auc"])
            res["seconds"] = time.perf_counter() - t0
            res["per_query_free_auc"] = per["free_auc"]
            res["per_query_aware_auc"] = per["aware_auc"]
            out[split] = res
            print(
                json.dumps({"run": run, "split": split, **{kk: res[kk] for kk in list(per)}}),
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+")
    p.add_argument("--splits", nargs="+", default=["valid", "test"])
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    from distrec.distributed.env import destroy_distributed

    results = []
    try:
        for run in args.runs:
            results.append(evaluate_run(run, args.splits, args.k))
    finally:
        destroy_distributed()
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "runs": results}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
