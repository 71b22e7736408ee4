"""Embedding export: the vectors a model scores with, as Parquet, one file per rank.

``export_vectors(session, what, out_dir)`` writes, on every rank at once:

* ``items``: ``RecModel.item_reps`` of the rank's item slice [lo, hi) (after ``prepare_eval``,
  so graph models export their propagated representations);
* ``users`` / ``groups``: ``RecModel.query`` of the rank's share of all users (groups), built by
  ``TaskData.queries_for``; ``interests``: the same for multi-interest models (query [B, F, D]),
  one row per (user, interest).

Each rank writes ``part-<rank>.parquet`` (columns ``raw_id`` string, [``interest`` int32,]
``vector`` list<float32>) to a temporary name and renames it; after a barrier rank 0 writes
``_manifest.json`` (what, model, checkpoint, dim, rows per part, score function) and ``_SUCCESS``
last, so a reader that sees ``_SUCCESS`` sees every part. ``model.score(query, items)`` on the
reloaded vectors gives the scores evaluation and recommend rank by.

Sequence models (DisMIR, MDGR) build a user's query from the history in a split's evaluation
rows, not from the user id: their users/interests are exported for the queries of ``split``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from distrec.data.bundle import Bundle
from distrec.eval.ranking import compute_item_reps, item_slice
from distrec.models.api import EvalQuery

WHATS = ("users", "items", "groups", "interests")


class ExportError(ValueError):
    """A request the model cannot serve (e.g. groups of a model without a group task)."""


def _vector_table(raw: np.ndarray, reps: torch.Tensor, what: str) -> pa.Table:
    """Rows of ``reps`` [n, D] (or [n, F, D] for interests) with their raw ids [n]."""
    reps = reps.detach().float().cpu()
    n = reps.shape[0]
    cols: dict[str, Any] = {}
    if what == "interests":
        f, d = reps.shape[1], reps.shape[2]
        raw = np.repeat(raw, f)
        cols["raw_id"] = pa.array(raw.astype(str), type=pa.string())
        cols["interest"] = pa.array(np.tile(np.arange(f, dtype=np.int32), n))
    else:
        d = int(np.prod(reps.shape[1:]))
        cols["raw_id"] = pa.array(raw.astype(str), type=pa.string())
    values = pa.array(reps.reshape(-1).numpy(), type=pa.float32())
    cols["vector"] = pa.FixedSizeListArray.from_arrays(values, d)
    return pa.table(cols)


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _queries(s: Any, what: str, split: str) -> tuple[str, Iterator[EvalQuery], str | None]:
    """(task, this rank's queries of every user / group, the split they come from or None)."""
    task = "group" if what == "groups" else "user"
    if task not in s.model.tasks:
        raise ExportError(f"--what {what}: model {s.cfg.model_name} has no {task} task")
    n = s.manifest.num_groups if task == "group" else s.manifest.num_users
    try:
        return task, s.data.queries_for(np.arange(n, dtype=np.int64), task), None
    except NotImplementedError:  # sequence models: the split's query rows carry the history
        return task, s.data.eval_queries(split, task), split


@torch.no_grad()
def export_vectors(
    s: Any, what: str, out_dir: str | Path, *, split: str = "test", checkpoint: str = "best"
) -> int:
    """Write this rank's vectors of ``what`` under ``out_dir``; returns the rows written by all
    ranks (on every rank). Must be called on every rank of the session ``s``."""
    if what not in WHATS:
        raise ExportError(f"--what {what!r}: one of {', '.join(WHATS)}")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "_SUCCESS").unlink(missing_ok=True)  # a rewrite is incomplete until it is back
    dist.barrier()
    model, bundle = s.model, Bundle(s.cfg.data.bundle)
    model.eval()
    model.prepare_eval()  # graph models: propagated tables, as evaluation scores with
    if what == "items":
        num_items = s.manifest.num_items
        lo, hi = item_slice(num_items, rank, world)
        chunk = max(s.cfg.data.eval_batch_size, 1)
        item_reps = compute_item_reps(model, s.data, lo, hi, chunk, num_items, world)
        table = _vector_table(bundle.raw_ids("items")[lo:hi], item_reps, what)
        task, from_split = "user", None
    else:
        task, queries, from_split = _queries(s, what, split)
        raw_all = bundle.raw_ids("groups" if task == "group" else "users")
        ids: list[np.ndarray] = []
        reps: list[torch.Tensor] = []
        for q in queries:
            rep = model.query(q.batch.to(s.env.device), task)  # [b, D] or [b, F, D]
            if (rep.dim() == 3) != (what == "interests"):
                raise ExportError(
                    f"--what {what}: model {s.cfg.model_name} has "
                    + (f"{rep.shape[1]} interest vectors per user; use --what interests"
                       if rep.dim() == 3 else "one vector per user; use --what users")
                )  # fmt: skip
            ids.append(q.ids.numpy())
            reps.append(rep[: len(q.ids)].float().cpu())
        table = _vector_table(raw_all[np.concatenate(ids)], torch.cat(reps), what)
    width = max(5, math.ceil(math.log10(max(world, 2))))
    _write_atomic(table, out / f"part-{rank:0{width}d}.parquet")
    counts: list[Any] = [None] * world
    dim = table.schema.field("vector").type.list_size if table.num_rows else 0
    dist.all_gather_object(counts, (table.num_rows, dim))
    total = sum(c[0] for c in counts)
    if rank == 0:
        manifest = {
            "what": what,
            "model": s.cfg.model_name,
            "run": str(s.cfg.run.dir),
            "checkpoint": checkpoint,
            "task": task,
            "dim": max(c[1] for c in counts),
            "world_size": world,
            "rows": [c[0] for c in counts],
            "score": f"{type(model).__name__}.score(query, items)",
        }
        if what != "items" and from_split is not None:
            manifest["split"] = from_split  # whose query rows (sequence models)
        (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
        (out / "_SUCCESS").write_text("")
    dist.barrier()
    return total


def read_vectors(out_dir: str | Path) -> pa.Table:
    """All parts of an export (after ``_SUCCESS``), in rank order."""
    out = Path(out_dir)
    if not (out / "_SUCCESS").exists():
        raise FileNotFoundError(f"{out}: no _SUCCESS (export incomplete or not an export)")
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
