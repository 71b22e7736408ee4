"""Top-K ranking metrics: Recall@K, NDCG@K, HR@K, and AUC over the full ranking.

Definitions (per query with a non-empty target set T; queries without targets are skipped):

* ``recall@k`` = |top-k ∩ T| / |T|  (LightGCN / IGRec code convention, not min(k, |T|))
* ``ndcg@k``  = sum_{j<k, item_j in T} 1/log2(j+2)  /  sum_{j<min(k,|T|)} 1/log2(j+2)
* ``hr@k``    = 1 if top-k ∩ T is non-empty
* ``auc``     = mean over t in T of P(score(t) > score(n)) over the ranked non-target items n,
  ties counting 1/2 (computed by the distributed evaluator, which sees every score).

The functions work on numpy arrays so that a test can recompute them from an exported top-K file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def metric_names(ks: Sequence[int], with_auc: bool = True) -> list[str]:
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hr")]
    return names + (["auc"] if with_auc else [])


def hits_matrix(topk: np.ndarray, targets: Sequence[Iterable[int]]) -> np.ndarray:
    """[B, K] bool: topk[b, j] is one of targets[b]. ``topk`` holds item ids, -1 for padding."""
    out = np.zeros(topk.shape, dtype=bool)
    for b, t in enumerate(targets):
        ts = np.fromiter(t, dtype=np.int64)
        if ts.size:
            out[b] = np.isin(topk[b], ts) & (topk[b] >= 0)
    return out


def ranking_metrics(
    topk: np.ndarray, targets: Sequence[Iterable[int]], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-query metric values for the queries with targets.

    Args:
        topk: [B, K] ranked item ids (best first), K >= max(ks); -1 pads short lists.
        targets: B held-out item collections.
        ks: cut-offs.

    Returns:
        name -> [B'] values, B' = queries with at least one target (same order).
    """
    targets = [list(t) for t in targets]
    n_t = np.array([len(set(t)) for t in targets], dtype=np.float64)
    keep = n_t > 0
    hits = hits_matrix(topk, targets)[keep]
    n_t = n_t[keep]
    disc = 1.0 / np.log2(np.arange(topk.shape[1]) + 2.0)  # [K]
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        dcg = np.asarray((h * disc[:k]).sum(1))
        ideal = np.cumsum(disc[:k])[np.minimum(n_t, k).astype(np.int64) - 1]
        out[f"recall@{k}"] = h.sum(1) / n_t
        out[f"ndcg@{k}"] = dcg / ideal
        out[f"hr@{k}"] = np.asarray(h.any(1), dtype=np.float64)
    return out


def auc_from_counts(less: np.ndarray, ties: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """AUC of each (query, target) pair from counts of negatives scoring below / equal to it."""
    return (less + 0.5 * ties) / np.maximum(negatives, 1)


def mean_metrics(sums: dict[str, float], count: int) -> dict[str, float]:
    """Averages from summed per-query values (0.0 when there were no queries)."""
    return {k: (float(v) / count if count else 0.0) for k, v in sums.items()}
