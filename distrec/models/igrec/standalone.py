"""Single-process IGRec training and full-ranking evaluation of both tasks, without the engine.

A tool for hyper-parameter search on a shared CPU box (no process group, no sharding, no
checkpoints): the same model class and data adapter as ``distrec.train igrec``, an unsharded
EmbeddingBagCollection and dense Adam (what the engine runs with ``compute_kernel: dense``).
It evaluates both tasks on validation every ``--eval-every`` epochs and, per task, keeps the test
metrics of that task's best validation NDCG@10 (the paper tunes each task on validation).

Example::

    python -m distrec.models.igrec.standalone --bundle data/bundles/mafengwo --epochs 60 \\
        --lr 0.001 --l2 1e-4 model.eta1=0.9 model.tau=0.5 --json-out /tmp/igrec.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from distrec.data.schema import Manifest
from distrec.engine.standalone import (
    KS,
    eval_due,
    full_ranking_means,
    log_epoch,
    model_in_eval,
    train_epoch,
)
from distrec.models.api import Batch
from distrec.models.igrec.config import IGRecConfig
from distrec.models.igrec.data import IGRecData
from distrec.models.igrec.graphs import load_graphs
from distrec.models.igrec.model import IGRec

TASKS = ("user", "group")


@torch.no_grad()
def evaluate(model: IGRec, data: IGRecData, split: str, ks: list[int]) -> dict[str, float]:
    """``{task/metric: mean}`` over the queries of both tasks with items in ``split``; full
    ranking over all items, excluding train positives (and valid ones for test)."""
    out: dict[str, float] = {}
    with model_in_eval(model):
        items = model.item_reps(data.item_batch(torch.arange(data.g.num_items)))  # [N, 2D]
        for task in TASKS:

            def score(batch: Batch, task: str = task) -> torch.Tensor:
                return model.score(model.query(batch, task), items, task)

            means = full_ranking_means(data.eval_queries(split, task), score, ks)
            out.update({f"{task}/{k}": v for k, v in means.items()})
    return out


def parse_overrides(pairs: list[str]) -> IGRecConfig:
    """``model.key=value`` strings -> IGRecConfig (values parsed as JSON, else kept as str)."""
    cfg = IGRecConfig()
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for item in pairs:
        key, sep, raw = item.partition("=")
        name = key.removeprefix("model.")
        if not sep or name not in fields:
            raise ValueError(
                f"override {item!r}: expected model.<field>=value, fields: {list(fields)}"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        setattr(cfg, name, value)
    cfg.check()
    return cfg


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument(
        "--patience", type=int, default=0, help="evaluations with no gain on either task"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default="")
    p.add_argument("overrides", nargs="*", help="model.<field>=value")
    a = p.parse_args(argv)
    cfg = parse_overrides(a.overrides)
    torch.manual_seed(a.seed)
    manifest = Manifest.load(a.bundle)
    graphs = load_graphs(a.bundle, manifest)
    data = IGRecData(
        a.bundle, graphs, target_behavior=len(manifest.behaviors) - 1,
        batch_size=a.batch_size, eval_batch_size=1024, num_negatives=a.negatives,
        rank=0, world=1, seed=a.seed, with_interest_table=cfg.interest_module == "embedding",
    )  # fmt: skip
    model = IGRec(cfg, graphs, layers=a.layers, l2=a.l2, device=torch.device("cpu"), seed=a.seed)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    ks = KS
    best: dict[str, dict[str, object]] = {t: {"valid": -1.0} for t in TASKS}
    curve: list[dict[str, float]] = []
    stale, t0 = 0, time.time()
    for epoch in range(a.epochs):
        loss = train_epoch(model, data.train_batches(epoch), opt)
        if not eval_due(epoch, a.eval_every, a.epochs):
            continue
        valid = evaluate(model, data, "valid", ks)
        curve.append({"epoch": epoch + 1, "loss": loss, **valid})
        log_epoch(epoch + 1, loss, valid, t0, lambda k: k.endswith("@10") and "hr" not in k)
        improved = False
        test: dict[str, float] | None = None
        for task in TASKS:
            if valid[f"{task}/ndcg@10"] > best[task]["valid"]:  # type: ignore[operator]
                test = test or evaluate(model, data, "test", ks)
                best[task] = {
                    "valid": valid[f"{task}/ndcg@10"],
                    "epoch": epoch + 1,
                    "valid_metrics": {k: v for k, v in valid.items() if k.startswith(task)},
                    "test": {k: v for k, v in test.items() if k.startswith(task)},
                }
                improved = True
        stale = 0 if improved else stale + 1
        if a.patience and stale >= a.patience:
            break
    result: dict[str, object] = {
        "best": best,
        "curve": curve,
        "args": {k: v for k, v in vars(a).items() if k != "overrides"},
        "model": dataclasses.asdict(cfg),
        "seconds": round(time.time() - t0, 1),
    }
    for task in TASKS:
        b = best[task]
        if "test" in b:
            print(f"best {task} epoch {b['epoch']} test " + " ".join(
                f"{k}={v:.4f}" for k, v in b["test"].items()  # type: ignore[attr-defined]
                if k.split("/")[1] in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
            ), file=sys.stderr)  # fmt: skip
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
