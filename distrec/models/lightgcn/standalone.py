"""Single-process LightGCN training and full-ranking evaluation, without the engine.

A tool for finding hyper-parameters quickly (no process group, no sharding): it uses the same
model class and data adapter as ``distrec.train``, an unsharded EmbeddingBagCollection, and an
optimizer that mirrors the engine's choices (``adam`` = dense kernel + Adam; ``adagrad`` /
``rowwise_adagrad`` = what fbgemm's fused EXACT_ADAGRAD / EXACT_ROWWISE_ADAGRAD compute).

Example::

    python -m distrec.models.lightgcn.standalone --bundle data/bundles/mafengwo \\
        --epochs 200 --lr 0.05 --optimizer adagrad --l2 1e-4 --layers 3 --dim 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from distrec.data.bundle import Bundle
from distrec.engine.standalone import (
    KS,
    eval_due,
    full_ranking_means,
    log_epoch,
    model_in_eval,
    train_epoch,
)
from distrec.graph.adjacency import bipartite_from_bundle
from distrec.models.lightgcn.data import LightGCNData
from distrec.models.lightgcn.model import LightGCN, LightGCNConfig


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row (mean of the row's squared gradient), as fbgemm's
    EXACT_ROWWISE_ADAGRAD: ``s_r += mean(g_r^2); w_r -= lr * g_r / (sqrt(s_r) + eps)``."""

    def __init__(self, params, lr: float = 0.05, eps: float = 1e-8) -> None:  # noqa: ANN001
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.reshape(p.shape[0], -1)
                st = self.state[p].setdefault("sum", torch.zeros(p.shape[0], dtype=p.dtype))
                st += g.pow(2).mean(1)
                p.view(p.shape[0], -1).sub_(group["lr"] * g / (st.sqrt() + group["eps"])[:, None])


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:  # noqa: ANN001
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=1e-8)
    if name == "rowwise_adagrad":
        return RowWiseAdagrad(params, lr=lr)
    raise ValueError(f"--optimizer: {name!r} is not one of adam, adagrad, rowwise_adagrad")


@torch.no_grad()
def evaluate(model: LightGCN, data: LightGCNData, split: str, ks: list[int]) -> dict[str, float]:
    """Full ranking over all items, excluding train positives (and valid ones for test)."""
    with model_in_eval(model):
        items = model.item_reps(data.item_batch(torch.arange(data.num_items)))  # [N, D]
        return full_ranking_means(
            data.eval_queries(split), lambda batch: model.query(batch) @ items.T, ks
        )


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--mode", default="full", choices=["full", "sampled"])
    p.add_argument("--fanout", default="", help="comma-separated per-hop caps (sampled mode)")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", default="adagrad")
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=5, help="evaluations without valid gain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default="")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    bundle = Bundle(a.bundle)
    graph = bipartite_from_bundle(bundle)
    fanout = [int(x) for x in a.fanout.split(",") if x]
    data = LightGCNData(
        bundle, 0, 1, mode=a.mode, layers=a.layers, fanout=fanout, graph=graph,
        batch_size=a.batch_size, seed=a.seed, prefetch=2,
    )  # fmt: skip
    model = LightGCN(LightGCNConfig(dim=a.dim), graph, layers=a.layers, l2=a.l2)
    opt = make_optimizer(a.optimizer, model.parameters(), a.lr)
    ks = KS
    best: dict[str, object] = {"valid": {"ndcg@10": -1.0}}
    stale, t0 = 0, time.time()
    for epoch in range(a.epochs):
        loss = train_epoch(model, data.train_batches(epoch), opt)
        if not eval_due(epoch, a.eval_every, a.epochs):
            continue
        valid = evaluate(model, data, "valid", ks)
        log_epoch(epoch + 1, loss, valid, t0, lambda k: k.endswith("@10"))
        if valid["ndcg@10"] > best["valid"]["ndcg@10"]:  # type: ignore[index]
            best = {"epoch": epoch + 1, "valid": valid, "test": evaluate(model, data, "test", ks)}
            stale = 0
        else:
            stale += 1
            if stale >= a.patience:
                break
    best["args"] = vars(a)
    best["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(best, indent=1))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(best, f, indent=1)
    return best


if __name__ == "__main__":
    main()
