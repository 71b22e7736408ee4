"""What the MESI head does on trained CIGF runs: gate weights and each expert's own ranking.

    OMP_NUM_THREADS=1 python -m research.cigf_gates --out docs/results/cigf_jd_gates.json \
        runs/cigf-jd-d64-cigf-s0 runs/cigf-jd-d64-mmoe-s0 ...

For each run's ``best`` checkpoint (or each of ``--checkpoints``; full graph mode only) it
propagates once, then on the target task (buy) over the test users, ranking all items with the
engine's exclusions (train and valid buys), it reports full-ranking HR@10 / NDCG@10 of:

* ``head``: the run's own head (``model.head.matrix``; must equal the engine's test figures),
* MESI runs only: ``uniform`` (gates fixed at 1/K: the mean of the K experts), ``expert_j``
  (expert j alone, ``<x_j, y_j>``), ``cross_mean`` (``<mean_k x_k, mean_k y_k>``, the input of
  the bilinear head without its ``r``), and ``gate_only_item`` / ``gate_only_user``
  (the gate with its user-side or item-side logit term removed).

Gate statistics of the target task (MESI and MMoE): mean weight per expert and mean gate
entropy over the (test user, test item) pairs and over (test user, random item) pairs, and the
share of the gate-logit variance that comes from the item side (``W_item y``) against the user
side. Also each expert's mean score on those pairs and its spread, since an expert with a
larger score scale dominates a softmax mixture whatever the gate says.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _topk_metrics(
    scores: torch.Tensor, users: np.ndarray, data: Any, k: int = 10
) -> dict[str, float]:
    """HR@k and NDCG@k of ``scores`` [B, N] for ``users`` on test, train/valid buys excluded
    (the engine's definitions, :func:`distrec.metrics.ranking.ranking_metrics`)."""
    from distrec.metrics.ranking import ranking_metrics

    scores = scores.clone()
    for b, u in enumerate(users.tolist()):
        for csr in (data.target_train, data.heldout("valid")):
            seen = csr.row(u)[0]
            if seen.size:
                scores[b, torch.as_tensor(seen)] = -math.inf
    top = scores.topk(k, dim=1).indices.numpy()
    test = data.heldout("test")
    per_query = ranking_metrics(top, [test.row(u)[0] for u in users.tolist()], [k])
    return {m: float(per_query[m].mean()) for m in (f"hr@{k}", f"ndcg@{k}")}


def _entropy(g: torch.Tensor) -> float:
    return float(-(g * g.clamp_min(1e-12).log()).sum(-1).mean())


def _gate_stats(head: Any, x: torch.Tensor, y: torch.Tensor, task: int, pairs: tuple) -> dict:
    u_idx, i_idx, r_idx = pairs
    lu, li = head.gate_logits(x[:, u_idx], y, task)
    out: dict[str, Any] = {}
    for name, items in (("test_pairs", i_idx), ("random_pairs", r_idx)):
        logits = lu + li[items]
        g = torch.softmax(logits, -1)
        out[name] = {
            "mean_weight": [round(float(v), 4) for v in g.mean(0)],
            "entropy": round(_entropy(g), 4),
            "max_entropy": round(math.log(g.shape[-1]), 4),
            "mean_max_weight": round(float(g.max(-1).values.mean()), 4),
        }
    # variance of the logit differences (softmax is shift-invariant) from each side
    du = (lu - lu.mean(-1, keepdim=True)).var(0).sum()
    di = (li - li.mean(-1, keepdim=True)).var(0).sum()
    out["item_share_of_logit_variance"] = round(float(di / (du + di)), 4)
    return out


def _expert_scale(x: torch.Tensor, y: torch.Tensor, pairs: tuple) -> dict:
    u_idx, i_idx, r_idx = pairs
    d = x.shape[-1]
    out = {}
    for name, items in (("test_pairs", i_idx), ("random_pairs", r_idx)):
        s = (x[:, u_idx] * y[:, items]).sum(-1) / d  # [K, P]
        out[name] = {
            "mean": [round(float(v), 5) for v in s.mean(1)],
            "std": [round(float(v), 5) for v in s.std(1)],
        }
    return out


def analyse(run: str, seed: int, checkpoint: str = "best") -> dict[str, Any]:
    from distrec.evaluate import load_for_eval

    s = load_for_eval(run, checkpoint, [])
    model, data = s.model, s.data
    model.eval()
    with torch.no_grad():
        model.prepare_eval()
    cache = model._cache
    assert cache is not None, "full graph mode only"
    nu = model.num_users
    x, y = cache[:, :nu].float(), cache[:, nu:].float()
    k = model.k
    task = k - 1
    head = model.head
    test = data.heldout("test")
    users = np.flatnonzero(test.degrees() > 0)
    rng = np.random.default_rng(seed)
    # one (user, test item) pair per test user, and one random item per user
    i_idx = torch.as_tensor([int(rng.choice(test.row(int(u))[0])) for u in users])
    r_idx = torch.as_tensor(rng.integers(0, model.num_items, users.shape[0]))
    pairs = (torch.as_tensor(users), i_idx, r_idx)
    xu = x[:, users]
    kind = type(head).__name__
    res: dict[str, Any] = {"run": run, "checkpoint": checkpoint, "head": kind}
    res["test_users"] = int(users.shape[0])
    with torch.no_grad():
        res["rank"] = {"head": _topk_metrics(head.matrix(xu, y, task), users, data)}
        if kind == "Mesi":
            d = x.shape[-1]
            dots = torch.einsum("jbd,jnd->jbn", xu, y) / d  # [K, B, N]
            res["rank"]["uniform"] = _topk_metrics(dots.mean(0), users, data)
            for j, name in enumerate(model.behaviors):
                res["rank"][f"expert_{name}"] = _topk_metrics(dots[j], users, data)
            res["rank"]["cross_mean"] = _topk_metrics(xu.mean(0) @ y.mean(0).T / d, users, data)
            lu, li = head.gate_logits(xu, y, task)
            for name, logits in (
                ("gate_only_item", li[None, :, :].expand(len(users), -1, -1)),
                ("gate_only_user", lu[:, None, :].expand(-1, y.shape[1], -1)),
            ):
                g = torch.softmax(logits, -1)
                res["rank"][name] = _topk_metrics(torch.einsum("bnj,jbn->bn", g, dots), users, data)
        if kind in ("Mesi", "SharedMmoe"):
            res["gates"] = _gate_stats(head, x, y, task, pairs)
        if kind == "Mesi":
            res["expert_scores"] = _expert_scale(x, y, pairs)
    res["behaviors"] = list(model.behaviors)
    if checkpoint == "best":  # the engine's own test figures, for the consistency check
        test_metrics = json.loads((Path(run) / "metrics.json").read_text())["test"]
        res["engine_test"] = {m: test_metrics[m] for m in ("hr@10", "ndcg@10")}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0, help="draw of the gate-statistics pairs")
    ap.add_argument(
        "--checkpoints",
        nargs="+",
        default=["best"],
        help="checkpoint names to analyse in every run (e.g. step-75 step-150)",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))  # `python research/cigf_gates.py` as well as `-m research...`
    from research.mdgr_eval_candidates import run_each

    def probe(run: str) -> dict[str, Any]:
        r: dict[str, Any] = {"run": run, "checkpoints": []}
        for ckpt in args.checkpoints:
            r["checkpoints"].append(analyse(run, args.seed, ckpt))
            print(json.dumps(r["checkpoints"][-1]), flush=True)
        return r

    run_each(args.runs, probe, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
