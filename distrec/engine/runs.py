"""Evaluation and top-K export on a built :class:`Session` (all ranks take part)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.distributed as dist

from distrec.data.bundle import Bundle
from distrec.eval.ranking import EvalResult, evaluate_split
from distrec.models.api import EvalQuery


def _seen_items_ranked(queries: Iterable[EvalQuery]) -> Iterator[EvalQuery]:
    """``eval.exclude_train=false``: the queries with nothing masked, so the items a user already
    has (train positives, and valid ones on test) take part in the ranking."""
    for q in queries:
        yield dataclasses.replace(q, exclude=[[] for _ in q.exclude])


def _eval(
    s: Any,
    split: str,
    task: str,
    collect: bool = False,
    k: int | None = None,
    queries: Iterable[EvalQuery] | None = None,
) -> EvalResult:
    with_auc = bool(getattr(s.cfg.eval, "auc", True)) and queries is None
    if not s.cfg.eval.exclude_train:
        base = queries if queries is not None else s.data.eval_queries(split, task)
        queries = _seen_items_ranked(base)
    return evaluate_split(
        s.model,
        s.data,
        split,
        num_items=s.manifest.num_items,
        ks=s.cfg.eval.ks,
        task=task,
        item_chunk=max(s.cfg.data.eval_batch_size, 1),
        collect_topk=collect,
        export_k=k,
        with_auc=with_auc,
        queries=queries,
    )


def run_eval(s: Any, split: str, metrics: Any | None = None) -> dict[str, float]:
    """Metrics of every task of the model on ``split``; task-prefixed when the model has several."""
    out: dict[str, float] = {}
    tasks = s.model.tasks
    for task in tasks:
        res = _eval(s, split, task)
        if metrics is not None:
            metrics.eval(split=split, task=task, values=res.metrics)
        prefix = "" if len(tasks) == 1 else f"{task}/"
        out.update({f"{prefix}{k}": v for k, v in res.metrics.items()})
    return out


def export_topk(
    s: Any,
    split: str,
    k: int,
    out: str | Path,
    task: str = "user",
    query_ids: np.ndarray | None = None,
) -> int:
    """Write ``out`` (Parquet: user raw id, rank 1..k, item raw id, score); returns rows written.

    The queries: the users (groups) with held-out items in ``split``, or, when ``query_ids`` [n]
    is given, those entities whatever their split (their train + valid positives excluded, as for
    test). Every rank computes its queries' lists; rank 0 gathers them and writes atomically.
    """
    queries = None if query_ids is None else s.data.queries_for(query_ids, task)
    res = _eval(s, split, task, collect=True, k=k, queries=queries)
    ids = np.concatenate(res.ids) if res.ids else np.zeros(0, np.int64)
    items = np.concatenate(res.items)[:, :k] if res.items else np.zeros((0, k), np.int64)
    scores = np.concatenate(res.scores)[:, :k] if res.scores else np.zeros((0, k), np.float32)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (ids, items, scores))
    n = 0
    if dist.get_rank() == 0:
        ids = np.concatenate([p[0] for p in parts])
        items = np.concatenate([p[1] for p in parts])
        scores = np.concatenate([p[2] for p in parts]).astype(np.float32)
        order = np.argsort(ids, kind="stable")
        ids, items, scores = ids[order], items[order], scores[order]
        kind = "users" if task == "user" else f"{task}s"
        b = Bundle(s.cfg.data.bundle)
        raw_q = b.raw_ids(kind)
        raw_i = b.raw_ids("items")
        valid = items >= 0
        rows_q = np.repeat(ids, k).reshape(-1, k)[valid]
        rank = np.tile(np.arange(1, k + 1), (ids.shape[0], 1))[valid]
        table = pa.table(
            {
                "user": pa.array(raw_q[rows_q].astype(str)),
                "rank": pa.array(rank.astype(np.int32)),
                "item": pa.array(raw_i[items[valid]].astype(str)),
                "score": pa.array(scores[valid]),
            }
        )
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(out)
        n = table.num_rows
    dist.barrier()
    return n
