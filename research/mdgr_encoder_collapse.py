"""How distinct are a history's encoded items, and how far does dynamic graph clustering move them?

    OMP_NUM_THREADS=1 python -m research.mdgr_encoder_collapse --out docs/results/x.json RUN [RUN ...]

For each trained MDGR run (its ``best`` checkpoint) and every query of ``--split``:

* ``cos_emb``: mean pairwise cosine between the raw item embeddings p of a history's items;
* ``cos_phi``: the same for the encoder outputs phi (eq. 6), the points that are clustered;
* ``spread_phi``: mean ||phi_i - mean(phi)|| / ||mean(phi)|| over a history's items: the size of
  what differs between a history's items (all that clustering can separate) next to what they
  share;
* ``dgc_shift``: mean ||x' - phi|| / ||phi|| over a history's items, x' the representations
  after the m graph-update cycles (target: the query's first positive);
* ``same_partition``: share of item pairs on which the dynamic and a static k-means clustering
  of phi agree (same cluster in both or different in both; label-permutation free).

Across queries, with u_q = mean(phi) of query q's history (what the interests are copies of):

* ``cos_users``: mean cosine between u_q of two different queries (is it one vector for
  everybody, or per user?);
* ``shared_r2``: mean over queries of the squared Pearson correlation, over all items, between
  query q's item scores u_q . p_i and the shared score ubar . p_i (ubar = mean of the u_q): the
  share of a query's ranking that is the same for every query (scores carry the sign of eq.
  16's Linear weight, which training may make negative);
* ``shared_pop_spearman``: Spearman correlation over all items between the shared score and
  the item's training popularity (``_popularity``): is the shared ranking a popularity ranking?

Runs trained with ``model.item_bias`` also get ``bias_std`` and ``bias_pop_spearman`` (the
learned per-item bias b_p: its spread and its Spearman correlation with training popularity).

Why: MDGR, MDGR-DGC and MDGR-W tie on ml-100k; if phi of one history are nearly one vector,
any clustering of them is arbitrary and the interests are copies of one vector.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from research.mdgr_eval_candidates import _popularity, load_best, run_each


def _pair_mean(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal cosine over valid pairs, per sequence: v [B, L, D] -> [B]."""
    n = torch.nn.functional.normalize(v, dim=-1)
    cos = n @ n.transpose(1, 2)
    pairs = (mask.unsqueeze(2) & mask.unsqueeze(1)) & ~torch.eye(
        v.shape[1], dtype=torch.bool
    ).unsqueeze(0)
    return (cos * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)


def _masked_mean(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the valid items, per sequence: v [B, L, D] -> [B, D]."""
    m = mask.unsqueeze(-1).to(v.dtype)
    return (v * m).sum(1) / m.sum(1).clamp_min(1)


def _spread(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_i ||v_i - mean(v)|| / ||mean(v)|| over valid items, per sequence -> [B]."""
    mean = _masked_mean(v, mask)  # [B, D]
    dev = (v - mean.unsqueeze(1)).norm(dim=-1) * mask  # [B, L]
    return dev.sum(1) / mask.sum(1).clamp_min(1) / mean.norm(dim=-1).clamp_min(1e-12)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation (ranks 0..n-1, ties broken by position: the scores here are
    continuous)."""

    def ranks(a: np.ndarray) -> np.ndarray:
        r = np.empty(len(a))
        r[np.argsort(a, kind="stable")] = np.arange(len(a))
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def _shared(
    users: torch.Tensor, items: torch.Tensor, pop: np.ndarray, sign: float
) -> dict[str, float]:
    """users [Q, D] (u_q per query), items [N, D], pop [N], sign of eq. 16's Linear weight (the
    score rises with u . p when it is positive) -> cos_users, shared_r2, shared_pop_spearman (see
    the module docstring)."""
    q = users.shape[0]
    n = torch.nn.functional.normalize(users, dim=-1)
    cos = (n @ n.T).sum() - q
    shared = sign * (items @ users.mean(0))  # [N]
    scores = users @ items.T  # [Q, N]
    sc = scores - scores.mean(1, keepdim=True)
    sh = shared - shared.mean()
    r = (sc @ sh) / (sc.norm(dim=1) * sh.norm()).clamp_min(1e-12)
    return {
        "cos_users": float(cos / max(q * (q - 1), 1)),
        "shared_r2": float((r**2).mean()),
        "shared_pop_spearman": _spearman(shared.numpy(), pop),
    }


def probe_run(run: str, split: str) -> dict[str, object]:
    from distrec.models.mdgr.clustering import kmeans

    s, items = load_best(run)
    m, data = s.model, s.data
    bias = items[:, m.cfg.dim :].sum(-1).numpy()  # model.item_bias runs: b_p; else empty sums
    items = items[:, : m.cfg.dim]  # without the bias block of model.item_bias runs
    sums = {
        "cos_emb": 0.0,
        "cos_phi": 0.0,
        "spread_phi": 0.0,
        "dgc_shift": 0.0,
        "same_partition": 0.0,
    }
    count = 0
    users = []
    with torch.no_grad():
        for q in data.eval_queries(split):
            hist, mask, _ = m._lookup(q.batch)
            phi = m._encode(hist, mask, m._days(q.batch, mask))
            target = items[torch.tensor([t[0] for t in q.targets])]
            x, lab_d, _ = m.dgc(phi, mask, m.target_proj(target))
            lab_s, _ = kmeans(phi, mask, m.cfg.interests, m.cfg.kmeans_steps)
            pairs = mask.unsqueeze(2) & mask.unsqueeze(1)
            same_d = lab_d.unsqueeze(2) == lab_d.unsqueeze(1)
            same_s = lab_s.unsqueeze(2) == lab_s.unsqueeze(1)
            agree = ((same_d == same_s) & pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)
            shift = (x - phi).norm(dim=-1) / phi.norm(dim=-1).clamp_min(1e-12)
            shift = (shift * mask).sum(1) / mask.sum(1).clamp_min(1)
            users.append(_masked_mean(phi, mask))
            sums["cos_emb"] += float(_pair_mean(hist, mask).sum())
            sums["cos_phi"] += float(_pair_mean(phi, mask).sum())
            sums["spread_phi"] += float(_spread(phi, mask).sum())
            sums["dgc_shift"] += float(shift.sum())
            sums["same_partition"] += float(agree.sum())
            count += len(q.targets)
    out: dict[str, object] = {k: v / max(count, 1) for k, v in sums.items()}
    sign = 1.0 if float(m.out.weight) >= 0 else -1.0
    pop = _popularity(data)
    out.update(_shared(torch.cat(users), items, pop, sign))
    if m.cfg.item_bias:
        out["bias_std"] = float(bias.std())
        out["bias_pop_spearman"] = _spearman(bias, pop)
    out.update(
        run=run,
        split=split,
        queries=count,
        encoder_residual=bool(getattr(m.cfg, "encoder_residual", False)),
        dgc=bool(m.cfg.dgc),
    )
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run_each(args.runs, lambda run: probe_run(run, args.split), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
