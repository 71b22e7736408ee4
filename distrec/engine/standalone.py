"""Pieces of the single-process search tools (``distrec.models.<name>.standalone``).

Those tools train one model class on one process, without the process group, sharding or
checkpoints of the engine, to search hyper-parameters quickly on a shared CPU box. The loop
and the full-ranking evaluation are the same for every model; only how a query batch is scored
differs, so a tool passes that in as ``score``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from distrec.metrics.ranking import ranking_metrics
from distrec.models.api import Batch, EvalQuery

KS = [5, 10, 20]


def train_epoch(
    model: torch.nn.Module, batches: Iterable[Batch], opt: torch.optim.Optimizer
) -> float:
    """One pass of ``loss, _ = model(batch)`` / backward / step; returns the mean loss."""
    total, n = 0.0, 0
    for batch in batches:
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, n = total + loss.item(), n + 1
    return total / max(n, 1)


@torch.no_grad()
def full_ranking_means(
    queries: Iterable[EvalQuery],
    score: Callable[[Batch], torch.Tensor],
    ks: list[int],
) -> dict[str, float]:
    """Mean ranking metrics (``recall@k``, ``ndcg@k``, ...) over the queries with targets.

    ``score(q.batch)`` gives [B, N] scores against every item; each query's ``exclude`` items
    are masked out before the top-max(ks) cut.
    """
    sums: dict[str, float] = {}
    count = 0
    for q in queries:
        if not len(q.targets):
            continue
        scores = score(q.batch)  # [B, N]
        for b, ex in enumerate(q.exclude):
            scores[b, torch.as_tensor(ex, dtype=torch.int64)] = -math.inf
        top = scores.topk(max(ks), dim=1).indices.numpy()  # [B, K]
        for name, v in ranking_metrics(top, q.targets, ks).items():
            sums[name] = sums.get(name, 0.0) + float(v.sum())
        count += sum(1 for t in q.targets if len(t))
    return {k: v / max(count, 1) for k, v in sums.items()}


def log_epoch(
    epoch: int, loss: float, valid: dict[str, float], t0: float, keep: Callable[[str], bool]
) -> None:
    """One progress line on stderr: ``epoch E loss L valid k=v ... (Ns)`` for the kept keys."""
    line = f"epoch {epoch} loss {loss:.4f} valid " + " ".join(
        f"{k}={v:.4f}" for k, v in valid.items() if keep(k)
    )
    print(f"{line} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)


def eval_due(epoch: int, every: int, epochs: int) -> bool:
    """Whether to evaluate after 0-based ``epoch``: every ``every`` epochs and after the last."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


@contextmanager
def model_in_eval(model: Any) -> Iterator[Any]:
    """``with model_in_eval(m):`` eval mode plus ``m.prepare_eval()``; train mode again after."""
    model.eval()
    model.prepare_eval()
    try:
        yield model
    finally:
        model.train()
