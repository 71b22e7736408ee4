"""How distinct are a history's encoded items, and how far does dynamic graph clustering move them?

    OMP_NUM_THREADS=1 python bench/mdgr_encoder_collapse.py --out docs/results/x.json RUN [RUN ...]

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

Why: MDGR, MDGR-DGC and MDGR-W tie on ml-100k; if phi of one history are nearly one vector,
any clustering of them is arbitrary and the interests are copies of one vector.
"""

from __future__ import annotations

import argparse
import json

import torch
from mdgr_eval_candidates import load_best, run_each  # bench/ is on the path of a bench script


def _pair_mean(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal cosine over valid pairs, per sequence: v [B, L, D] -> [B]."""
    n = torch.nn.functional.normalize(v, dim=-1)
    cos = n @ n.transpose(1, 2)
    pairs = (mask.unsqueeze(2) & mask.unsqueeze(1)) & ~torch.eye(
        v.shape[1], dtype=torch.bool
    ).unsqueeze(0)
    return (cos * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)


def _spread(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_i ||v_i - mean(v)|| / ||mean(v)|| over valid items, per sequence -> [B]."""
    m = mask.unsqueeze(-1).to(v.dtype)
    mean = (v * m).sum(1) / m.sum(1).clamp_min(1)  # [B, D]
    dev = (v - mean.unsqueeze(1)).norm(dim=-1) * mask  # [B, L]
    return dev.sum(1) / mask.sum(1).clamp_min(1) / mean.norm(dim=-1).clamp_min(1e-12)


def probe_run(run: str, split: str) -> dict[str, object]:
    from distrec.models.mdgr.clustering import kmeans

    s, items = load_best(run)
    m, data = s.model, s.data
    sums = {
        "cos_emb": 0.0,
        "cos_phi": 0.0,
        "spread_phi": 0.0,
        "dgc_shift": 0.0,
        "same_partition": 0.0,
    }
    count = 0
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
            sums["cos_emb"] += float(_pair_mean(hist, mask).sum())
            sums["cos_phi"] += float(_pair_mean(phi, mask).sum())
            sums["spread_phi"] += float(_spread(phi, mask).sum())
            sums["dgc_shift"] += float(shift.sum())
            sums["same_partition"] += float(agree.sum())
            count += len(q.targets)
    out: dict[str, object] = {k: v / max(count, 1) for k, v in sums.items()}
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
