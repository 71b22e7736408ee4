"""Rows and edges one CIGF sampled-mode training step propagates over, per fanout (issue #14).

For a bundle and a list of fanouts, builds this rank's training payloads (the engine's
``CigfData``, 1 rank) of the first ``--steps`` steps of epoch 0 and reports, per fanout, the mean
number of looked-up users / items (subgraph nodes) and subgraph edges per step, next to the full
graph's node and edge counts (what full mode propagates every step).

    python -m research.cigf_sampled_rows --bundle data/bundles/jd --layers 2 --batch 4096 \
        --fanout 20,10 --fanout 40,20 --over union --steps 5
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from distrec.models.cigf.data import CigfData


def step_rows(data: CigfData, steps: int) -> dict[str, float]:
    """Mean users, items, nodes and edges [scalar] of the first ``steps`` sampled payloads."""
    users, items, edges = [], [], []
    n_steps = min(steps, data.num_train_steps(0))
    for step in range(n_steps):
        sub = data.payload(0, step)["sub"]
        nu = int((sub.nodes < data.num_users).sum())
        users.append(nu)
        items.append(int(sub.nodes.shape[0]) - nu)
        edges.append(int(sub.rows.shape[0]))
    return {
        "steps": n_steps,
        "users_per_step": float(np.mean(users)),
        "items_per_step": float(np.mean(items)),
        "rows_per_step": float(np.mean(users) + np.mean(items)),
        "edges_per_step": float(np.mean(edges)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--fanout", action="append", required=True, help="comma list, e.g. 20,10")
    p.add_argument("--over", default="union", choices=["union", "relation"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out: dict[str, object] = {}
    for spec in args.fanout:
        fanout = [int(x) for x in spec.split(",")]
        data = CigfData(
            args.bundle,
            mode="sampled",
            layers=args.layers,
            fanout=fanout,
            fanout_over=args.over,
            batch_size=args.batch,
            seed=args.seed,
        )
        out[f"{spec}/{args.over}"] = step_rows(data, args.steps)
        if "full" not in out:
            assert data.graph is not None
            n_edges = sum(int(r.adj.nnz) for r in data.graph.relations)
            out["full"] = {
                "rows_per_step": data.num_users + data.num_items,
                "edges_per_step": n_edges,
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
