"""Protocol-1 metrics of a top-K export, computed two ways, to compare with VCGAE's JD figures.

VCGAE (the source of the JD split and of the HR@10 0.1947 / NDCG@10 0.1095 bar) evaluates with
the NGCF code base: ``hit_at_k`` = 1 when any test item is in the top K (the same HR as ours),
but ``ndcg_at_k(r, k)`` divides the DCG of the top-K hit vector ``r`` by the DCG of
``sorted(r)``, i.e. by the *ideal DCG of the hits that were found*, not of the user's test items.
A user with one hit at rank 3 and four missed test items scores 1/log2(4) / 1 = 0.5 there and
0.5 / IDCG(5 items) = 0.17 here. This module scores an export of
``python -m distrec.recommend`` both ways.

``python -m research.cigf_vcgae_metrics --bundle B --topk F.parquet [--k 5 10 20]``

Shapes: U test users, K list length.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pyarrow.parquet as pq

from distrec.data.bundle import Bundle


def _dcg(hits: np.ndarray) -> np.ndarray:
    """DCG of 0/1 hit rows ``hits`` [U, K] -> [U] (gain 1 / log2(rank + 1))."""
    disc = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    return (hits * disc).sum(axis=1)


def metrics_from_hits(hits: np.ndarray, n_pos: np.ndarray, ks: list[int]) -> dict[str, float]:
    """``hits`` [U, Kmax] 0/1 in rank order, ``n_pos`` [U] test items per user.

    Returns hr@k, recall@k, ndcg@k (ideal DCG over min(n_pos, k) test items, standard) and
    ngcf_ndcg@k (ideal DCG over the hits found in the top k, NGCF / VCGAE code).
    """
    out: dict[str, float] = {}
    for k in ks:
        h = hits[:, :k].astype(np.float64)
        n_hit = h.sum(axis=1)
        dcg = _dcg(h)
        ideal = np.zeros_like(h)
        for u, m in enumerate(np.minimum(n_pos, k)):
            ideal[u, :m] = 1.0
        ngcf_ideal = -np.sort(-h, axis=1)  # the hits moved to the front
        out[f"hr@{k}"] = float((n_hit > 0).mean())
        out[f"recall@{k}"] = float((n_hit / n_pos).mean())
        out[f"ndcg@{k}"] = float((dcg / _dcg(ideal)).mean())
        ngcf_max = _dcg(ngcf_ideal)
        out[f"ngcf_ndcg@{k}"] = float(
            np.where(ngcf_max > 0, dcg / np.maximum(ngcf_max, 1e-12), 0).mean()
        )
    return out


def score_export(bundle: Bundle, topk_path: str, ks: list[int], split: str = "test") -> dict:
    """Hits of the export at ``topk_path`` against ``split`` target interactions of ``bundle``."""
    target = bundle.manifest.behaviors[-1]
    t = bundle.interactions(split, target)
    users_raw = bundle.raw_ids("users").astype(str)
    items_raw = bundle.raw_ids("items").astype(str)
    pos: dict[str, set[str]] = {}
    for u, i in zip(users_raw[t["user"]], items_raw[t["item"]], strict=True):
        pos.setdefault(u, set()).add(i)
    tab = pq.read_table(topk_path, columns=["user", "rank", "item"]).to_pandas()
    tab["user"], tab["item"] = tab["user"].astype(str), tab["item"].astype(str)
    tab = tab.sort_values(["user", "rank"])
    kmax = max(ks)
    lists = tab.groupby("user")["item"].apply(list).to_dict()
    missing = sorted(set(pos) - set(lists))
    if missing:
        raise ValueError(
            f"{topk_path}: no top-K list for {len(missing)} {split} users, e.g. {missing[0]}"
        )
    users = sorted(pos)
    hits = np.zeros((len(users), kmax), dtype=np.int8)
    for r, u in enumerate(users):
        lst = lists[u][:kmax]
        if len(lst) < kmax:
            raise ValueError(f"{topk_path}: user {u} has {len(lst)} items, need {kmax}")
        hits[r] = [1 if i in pos[u] else 0 for i in lst]
    n_pos = np.array([len(pos[u]) for u in users])
    res = metrics_from_hits(hits, n_pos, ks)
    res["users"] = len(users)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.cigf_vcgae_metrics")
    p.add_argument("--bundle", required=True)
    p.add_argument("--topk", required=True, help="Parquet from python -m distrec.recommend")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    a = p.parse_args(argv)
    print(json.dumps(score_export(Bundle(a.bundle), a.topk, a.k, a.split), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
