"""How much of an item's co-occurrence neighbourhood lies inside one user's own history?

    OMP_NUM_THREADS=1 python -m research.dismir_cooc_history --config configs/dismir/gowalla.yaml \
        --bundle data/bundles/gowalla --out docs/results/dismir_cooc_history_gowalla.json

The partition loss (Theorem 4) pulls an item towards the items it co-occurs with (the bundle's
``graphs/item_cooc``: co(i, j) = users with both). The interests are then formed from the items
of one history. If most of an item's co-occurrence weight sits on items of the same history,
a stronger partition pulls a user's items together, against splitting them into F interests.

For each ``--split`` user, over the last ``max_len`` history items (what the model reads):

* ``pair_edge``: share of the history's item pairs (i != j) that are co-occurrence edges;
* ``in_history_weight``: mean over the history's items of sum_{j in history} S_ij (S's rows
  normalised to 1): the share of the item's co-occurrence weight inside the same history;

and the same two for a history of the same length drawn uniformly from the items (``_random``),
as the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distrec.config import load_config  # noqa: E402
from distrec.data.csr import Csr  # noqa: E402
from distrec.data.schema import GRAPH_ITEM_COOC  # noqa: E402
from distrec.data.seq_stream import windows  # noqa: E402
from distrec.models.dismir import SPEC  # noqa: E402


def history_stats(items: np.ndarray, graph: Csr) -> tuple[float, float]:
    """One history's distinct items [n] -> (pair_edge, in_history_weight)."""
    edges, weight = 0, 0.0
    for i in items:
        a, b = graph.indptr[i], graph.indptr[i + 1]
        nb, w = graph.indices[a:b], graph.weights[a:b].astype(np.float64)
        hit = np.isin(nb, items) & (nb != i)
        edges += int(hit.sum())
        weight += float(w[hit].sum() / w.sum()) if w.sum() > 0 else 0.0
    n = len(items)
    return edges / max(n * (n - 1), 1), weight / max(n, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = load_config(
        "dismir", args.config, [f"data.bundle={args.bundle}", "metrics.enabled=false"]
    )
    data = SPEC.build_data(cfg, args.bundle, 0, 1)
    graph = data.bundle.graph(GRAPH_ITEM_COOC)
    in_off, in_val = data.eval_share(args.split).cols["input"]  # one rank: every row
    hist, lengths = windows(in_val, in_off[:-1], in_off[1:], cfg.model.max_len)
    rng = np.random.default_rng(0)
    real, rand = [], []
    for h in np.split(hist, np.cumsum(lengths)[:-1]):
        h = np.unique(h)
        if len(h) < 2:
            continue
        real.append(history_stats(h, graph))
        rand.append(history_stats(rng.choice(data.num_items, len(h), replace=False), graph))
    r, q = np.array(real), np.array(rand)
    out = {
        "command": " ".join(["python"] + sys.argv),
        "bundle": args.bundle,
        "split": args.split,
        "users": len(real),
        "pair_edge": float(r[:, 0].mean()),
        "in_history_weight": float(r[:, 1].mean()),
        "pair_edge_random": float(q[:, 0].mean()),
        "in_history_weight_random": float(q[:, 1].mean()),
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
