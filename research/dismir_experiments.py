"""Single-process DisMIR experiments for docs/results/dismir.md: variants x seeds on one bundle.

The same model and data adapter as ``distrec.train`` (world size 1, unsharded EmbeddingCollection),
trained with Adam at lr 1e-3 as in the paper (fused Adam is GPU-only, so the torchrun path uses
Adagrad on CPU). Selection on validation recall@20 each epoch, test on the selected epoch,
Recall/NDCG/HR at 20 and 50, full ranking, plus paper Table 4 statistics on test users and
the item-partition statistics of the item table (``partition``, and ``partition_init`` before
training) on the bundle's co-occurrence graph.
``--variant popularity`` ranks by training frequency. One JSON line per run is appended to --out.

    OMP_NUM_THREADS=1 python -m research.dismir_experiments --config configs/dismir/gowalla.yaml \
        --bundle data/bundles/gowalla --variant dismir --seeds 0 1 2 --epochs 10 \
        --out docs/results/dismir_runs.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distrec.config import load_config  # noqa: E402
from distrec.data.csr import Csr  # noqa: E402
from distrec.data.schema import GRAPH_ITEM_COOC, Manifest  # noqa: E402
from distrec.metrics.ranking import ranking_metrics  # noqa: E402
from distrec.models.common.sequence_data import SequenceData  # noqa: E402
from distrec.models.dismir import SPEC, DisMIR  # noqa: E402
from research.dismir_analysis import interest_statistics, item_partition_stats  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "dismir": [],
    "mir": ["model.partition_weight=0"],
    "mir_rv": [
        "model.partition_weight=0",
        "model.regularizer=routing_variance",
        "model.reg_weight=0.1",
    ],
    "mir_bf": [
        "model.partition_weight=0",
        "model.regularizer=backward_flow",
        "model.reg_weight=0.1",
    ],
    "wo_dpi": ["model.readout=mean"],
    "comirec_sa": [
        "model.backbone=self_attention",
        "model.readout=max",
        "model.partition_weight=0",
    ],
    "comirec_sa_partition": ["model.backbone=self_attention", "model.readout=max"],
}
KS = (20, 50)


def evaluate(model: DisMIR, data: SequenceData, split: str) -> dict[str, float]:
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        items = model.item_reps(data.item_batch(torch.arange(data.num_items)))
        for q in data.eval_queries(split):
            top = model.score(model.query(q.batch), items).topk(max(KS), dim=1).indices.numpy()
            for k, v in ranking_metrics(top[: len(q.targets)], q.targets, KS).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            n += sum(1 for t in q.targets if t)
    model.train()
    return {k: v / max(n, 1) for k, v in sums.items()}


def popularity(data: SequenceData, split: str) -> dict[str, float]:
    items = pc.list_flatten(data.bundle.table("sequences", ["items"]).column("items"))
    counts = np.bincount(items.to_numpy(), minlength=data.num_items)
    top = np.argsort(-counts, kind="stable")[: max(KS)]
    sums: dict[str, float] = {}
    n = 0
    for q in data.eval_queries(split):
        tk = np.tile(top, (len(q.targets), 1))
        for k, v in ranking_metrics(tk, q.targets, KS).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        n += sum(1 for t in q.targets if t)
    return {k: v / max(n, 1) for k, v in sums.items()}


def _partition(model: DisMIR, cooc: Csr) -> dict[str, float]:
    """Item-partition statistics of the model's item table [N, K] on the co-occurrence graph."""
    w = model.item_weight().detach().numpy()
    return item_partition_stats(w, cooc)


def run(args: argparse.Namespace, seed: int) -> dict[str, object]:
    overrides = [f"data.bundle={args.bundle}", f"run.seed={seed}", "metrics.enabled=false"]
    cfg = load_config("dismir", args.config, overrides + VARIANTS.get(args.variant, []) + args.set)
    data = SPEC.build_data(cfg, args.bundle, 0, 1)
    rec: dict[str, object] = {
        "variant": args.variant,
        "seed": seed,
        "bundle": args.bundle,
        "set": args.set,
        "lr": args.lr,
        "epochs_max": args.epochs,
        "patience": args.patience,
    }
    if args.variant == "popularity":
        rec.update(valid=popularity(data, "valid"), test=popularity(data, "test"))
        return rec
    torch.manual_seed(seed)
    model = SPEC.build_model(cfg, Manifest.load(args.bundle), torch.device("cpu"))
    cooc = data.bundle.graph(GRAPH_ITEM_COOC)
    rec["partition_init"] = _partition(model, cooc)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    best, best_state, history = -1.0, None, []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        for batch in data.train_batches(epoch):
            opt.zero_grad()
            model(batch)[0].backward()
            opt.step()
        valid = evaluate(model, data, "valid")
        history.append(round(valid["recall@20"], 5))
        print(
            f"  {args.variant} seed {seed} epoch {epoch}: valid recall@20 {valid['recall@20']:.4f}",
            flush=True,
        )
        if valid["recall@20"] > best:
            best, best_state, best_epoch = (
                valid["recall@20"],
                copy.deepcopy(model.state_dict()),
                epoch,
            )
        elif args.patience and epoch - best_epoch >= args.patience:
            break  # early stopping: no validation gain for `patience` epochs
    model.load_state_dict(best_state)
    rec.update(
        best_epoch=best_epoch,
        epochs_run=len(history),
        valid_history=history,
        valid=evaluate(model, data, "valid"),
        test=evaluate(model, data, "test"),
        table4=interest_statistics(model, data, "test", max_users=100),
        partition=_partition(model, cooc),
        train_seconds=round(time.perf_counter() - t0, 1),
        model=vars(cfg.model),
    )
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--variant", default="dismir", choices=sorted(VARIANTS) + ["popularity"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--patience", type=int, default=0, help="stop after this many epochs without a gain"
    )
    p.add_argument("--set", nargs="*", default=[], help="extra key=value config overrides")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        rec = run(args, seed)
        rec["command"] = " ".join(["python"] + sys.argv)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec[k] for k in ("variant", "seed", "test")}), flush=True)


if __name__ == "__main__":
    main()
