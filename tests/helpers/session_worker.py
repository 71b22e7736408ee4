"""A torchrun worker shared by the models' 2-rank-vs-1-rank tests: build the engine's session
(DMP over the configured plan, fused sparse optimizer), train two epochs, record the global loss
of every step, then save what the test compares (rank 0 writes ``OUT.pt``).

Usage: torchrun --nproc_per_node=W session_worker.py MODEL OUT.pt CAPTURE key=value ...

CAPTURE names what is saved besides ``losses``:

* ``cache``: ``model._cache["user"]`` and ``["group"]`` after ``prepare_eval`` (IGRec's
  propagated representations);
* ``query_reps``: ``ids`` and ``reps`` of every ``valid`` query, gathered from every rank (CIGF).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from distrec.distributed.env import destroy_distributed
from distrec.engine.session import build_session
from distrec.models.api import Batch


def _cache(s: Any) -> dict[str, torch.Tensor]:
    m = s.model
    if "local" in m._cache:  # owned full mode: each rank holds its own rows; gather them all
        with torch.no_grad():
            users = m.query(Batch(dense={"ids": torch.arange(m.num_users)}), "user")
            groups = m.query(Batch(dense={"ids": torch.arange(m.num_groups)}), "group")
        return {"user": users, "group": groups}
    return {"user": m._cache["user"], "group": m._cache["group"]}


def _query_reps(s: Any) -> dict[str, torch.Tensor]:
    # every valid query of every rank: a rank evaluates the users of its own block, so the
    # first batch holds other users at W = 2 than at W = 1, but the whole split is the same set
    ids, reps = [], []
    with torch.no_grad():
        for q in s.data.eval_queries("valid"):  # the same step count on every rank
            n = len(q.targets)  # rows past n pad an empty step (query() may be a collective)
            ids.append(q.ids[:n])
            reps.append(s.model.query(q.batch)[:n])  # [n, ...]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (torch.cat(ids), torch.cat(reps)))  # every rank calls it
    return {"ids": torch.cat([g[0] for g in gathered]), "reps": torch.cat([g[1] for g in gathered])}


CAPTURES: dict[str, Callable[[Any], dict[str, torch.Tensor]]] = {
    "cache": _cache,
    "query_reps": _query_reps,
}


def main(model: str, out: str, capture: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    run(model, out, capture, overrides)
    destroy_distributed()  # after run()'s frame, the session's last reference, is gone


def train_step(s: Any, batch: Batch) -> float:
    """One optimiser step of session ``s`` on ``batch``; returns the global loss (a collective)."""
    loss, _ = s.wrapped(batch)
    s.optimizer.zero_grad()
    loss.backward()
    s.optimizer.step()
    # Rank losses are means over equal-sized slices: their mean is the global loss.
    g = loss.detach().clone()
    dist.all_reduce(g)
    return float(g) / dist.get_world_size()


def run(model: str, out: str, capture: str, overrides: list[str]) -> None:
    s = build_session(model, overrides=overrides, write_config=False)
    losses = [train_step(s, batch) for epoch in range(2) for batch in s.data.train_batches(epoch)]
    s.wrapped.eval()
    with torch.no_grad():
        s.model.prepare_eval()
    saved = CAPTURES[capture](s)
    if s.env.rank == 0:
        torch.save({"losses": losses, **saved}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
