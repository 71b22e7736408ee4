"""Re-evaluate trained MDGR runs on the chunks protocol with target-aware candidate scoring.

    OMP_NUM_THREADS=1 python -m research.mdgr_eval_candidates --out docs/results/x.json \
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

``--negatives popularity`` replaces each query's uniformly sampled negatives by as many items
drawn without replacement in proportion to their training popularity (counts over the training
chunks' inputs and targets), excluding the query's history and positives; the draw is seeded
and made in query order, so every run sees the same negatives. Under it a popularity ranker
scores about 0.5 AUC, and what a model gains over that is personalisation. The popularity
ranker's own metrics are written as ``popularity_auc`` / ``popularity_recall``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

REPO = Path(__file__).resolve().parents[1]


def _metrics(scores: np.ndarray, n_pos: int, k: int) -> tuple[float, float]:
    pos, neg = scores[:n_pos], scores[n_pos:]
    less = (pos[:, None] > neg[None, :]).sum(1) + 0.5 * (pos[:, None] == neg[None, :]).sum(1)
    top = np.argsort(-scores, kind="stable")[:k]
    return float((less / max(len(neg), 1)).mean()), float((top < n_pos).sum() / n_pos)


def _popularity(data) -> np.ndarray:
    """Training popularity [N]: item counts over the training chunks' inputs and targets."""
    t = data.bundle.table("eval/chunks", ["input", "targets"], split="train")
    vals = [pc.list_flatten(t.column(c)).to_numpy() for c in ("input", "targets")]
    return np.bincount(np.concatenate(vals), minlength=data.num_items).astype(np.float64)


def _popular_negatives(
    rng: np.random.Generator, pop: np.ndarray, exclude: set[int], n: int
) -> list[int]:
    """``n`` items drawn without replacement with probability ~ ``pop``, none in ``exclude``."""
    p = pop.copy()
    p[list(exclude)] = 0.0
    return rng.choice(len(p), size=n, replace=False, p=p / p.sum()).tolist()


def load_best(run: str, overrides: list[str] | None = None) -> tuple[Any, torch.Tensor]:
    """``run``'s best checkpoint (config ``overrides`` applied) in eval mode, ``prepare_eval`` done,
    with every item's representation [N, D]. Returns (session, items)."""
    from distrec.eval.ranking import compute_item_reps
    from distrec.evaluate import load_for_eval

    s = load_for_eval(run, "best", list(overrides or []))
    s.model.eval()
    n = int(s.manifest.num_items)
    with torch.no_grad():
        s.model.prepare_eval()
        items = compute_item_reps(s.model, s.data, 0, n, 4096, n, 1).float()
    return s, items


def run_each(runs: list[str], probe: Callable[[str], dict], out: str) -> None:
    """``probe`` every run in this process, then tear the process group down and write
    ``{"command", "runs"}`` to ``out`` (JSON). Shared by the MDGR analysis scripts."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    from distrec.distributed.env import destroy_distributed

    try:
        # each probe's session dies with its frame, before destroy_distributed
        results = [probe(run) for run in runs]
    finally:
        destroy_distributed()
    Path(out).write_text(json.dumps({"command": " ".join(sys.argv), "runs": results}) + "\n")


def evaluate_run(
    run: str,
    splits: list[str],
    k: int,
    negatives: str = "bundle",
    overrides: list[str] | None = None,
) -> dict:
    s, items = load_best(run, overrides)
    model, data = s.model, s.data
    out: dict = {"run": run, "overrides": list(overrides or [])}
    out["variant"] = {
        "variant": s.cfg.model.variant,
        "dgc": s.cfg.model.dgc,
        "weights": s.cfg.model.weights,
        "seed": s.cfg.run.seed,
    }
    pop = _popularity(data)
    with torch.no_grad():
        for split in splits:
            t0 = time.perf_counter()
            rng = np.random.default_rng(12345)  # same negatives for every run
            per: dict[str, list[float]] = {
                "free_auc": [],
                "aware_auc": [],
                "free_recall": [],
                "aware_recall": [],
                "popularity_auc": [],
                "popularity_recall": [],
            }
            for q in data.eval_queries(split):
                qrep = model.query(q.batch)
                assert q.candidates is not None, "chunks protocol bundles only"
                free_all = model.score(qrep, items)  # [b, N]
                hist = q.batch.sparse["ec"]["hist"].to_dense()
                for i, (t, c) in enumerate(zip(q.targets, q.candidates, strict=True)):
                    if negatives == "popularity":
                        seen = set(t) | set(hist[i].tolist())
                        c = list(t) + _popular_negatives(rng, pop, seen, len(c) - len(t))
                    ids = torch.tensor(c, dtype=torch.int64)
                    a, r = _metrics(pop[ids.numpy()], len(t), k)
                    per["popularity_auc"].append(a)
                    per["popularity_recall"].append(r)
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
            res["negatives"] = negatives
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
    p.add_argument("--negatives", choices=["bundle", "popularity"], default="bundle")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        help="config overrides at load, e.g. model.dgc=false: score a trained MDGR with static "
        "clustering (the parameters are the same in both variants)",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run_each(
        args.runs,
        lambda run: evaluate_run(run, args.splits, args.k, args.negatives, args.set),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
