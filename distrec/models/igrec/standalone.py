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
import math
import sys
import time

import torch

from distrec.data.schema import Manifest
from distrec.metrics.ranking import ranking_metrics
from distrec.models.igrec.config import IGRecConfig
from distrec.models.igrec.data import IGRecData
from distrec.models.igrec.graphs import load_graphs
from distrec.models.igrec.model import IGRec

TASKS = ("user", "group")


@torch.no_grad()
def evaluate(model: IGRec, data: IGRecData, split: str, ks: list[int]) -> dict[str, float]:
    """``{task/metric: mean}`` over the queries of both tasks with items in ``split``; full
    ranking over all items, excluding train positives (and valid ones for test)."""
    model.eval()
    model.prepare_eval()
    items = model.item_reps(data.item_batch(torch.arange(data.g.num_items)))  # [N, 2D]
    out: dict[str, float] = {}
    for task in TASKS:
        sums: dict[str, float] = {}
        count = 0
        for q in data.eval_queries(split, task):
            scores = model.score(model.query(q.batch, task), items, task)  # [B, N]
            for b, ex in enumerate(q.exclude):
                scores[b, torch.as_tensor(ex, dtype=torch.int64)] = -math.inf
            top = scores.topk(max(ks), dim=1).indices.numpy()
            for name, v in ranking_metrics(top, q.targets, ks).items():
                sums[name] = sums.get(name, 0.0) + float(v.sum())
            count += sum(1 for t in q.targets if len(t))
        out.update({f"{task}/{k}": v / max(count, 1) for k, v in sums.items()})
    model.train()
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
    ks = [5, 10, 20]
    best: dict[str, dict[str, object]] = {t: {"valid": -1.0} for t in TASKS}
    curve: list[dict[str, float]] = []
    stale, t0 = 0, time.time()
    for epoch in range(a.epochs):
        tot, n = 0.0, 0
        for batch in data.train_batches(epoch):
            loss, _ = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, n = tot + loss.item(), n + 1
        if (epoch + 1) % a.eval_every and epoch + 1 != a.epochs:
            continue
        valid = evaluate(model, data, "valid", ks)
        curve.append({"epoch": epoch + 1, "loss": tot / max(n, 1), **valid})
        line = f"epoch {epoch + 1} loss {tot / max(n, 1):.4f} valid " + " ".join(
            f"{k}={v:.4f}" for k, v in valid.items() if k.endswith("@10") and "hr" not in k
        )
        print(f"{line} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
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
                f"{k}={v:.4f}" for k, v in b["test"].items()  # type: ignore[union-attr]
                if k.split("/")[1] in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
            ), file=sys.stderr)  # fmt: skip
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
