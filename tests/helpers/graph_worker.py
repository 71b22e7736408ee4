"""torchrun worker for the graph models' partitioned full mode: STEPS training steps through the
engine's session (DMP, fused sparse optimizer, injected exchange), then what the test compares.

Usage: torchrun --nproc_per_node=W graph_worker.py MODEL OUT.pt STEPS key=value ...

Rank 0 saves ``losses`` (global loss per step), ``tables1`` (every table row after step 1: with
SGD, the step's gradients), ``reps`` (every propagated user / item (/ group) row after training,
gathered from their owners) and ``metrics`` (the sharded evaluation of split test).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from distrec.distributed.env import destroy_distributed
from distrec.engine.session import build_session
from distrec.eval.ranking import evaluate_split
from distrec.models.api import Batch
from distrec.models.igrec.model import full_table_kjt
from distrec.models.lightgcn.data import lookup_kjt
from tests.helpers.session_worker import train_step


def _tables(s: Any, name: str) -> dict[str, torch.Tensor]:
    m = s.model
    with torch.no_grad():
        if name == "igrec":
            pooled = m.ebc(full_table_kjt(m.counts)).to_dict()
            return {k: pooled[k][:n].clone() for k, n in m.counts.items()}
        u, i = m.num_users, m.num_items
        pooled = m.ebc(lookup_kjt(torch.arange(u), torch.arange(i))).to_dict()
        return {"user": pooled["user"][:u].clone(), "item": pooled["pos"][:i].clone()}


def _reps(s: Any, name: str) -> dict[str, torch.Tensor]:
    m = s.model
    with torch.no_grad():
        m.prepare_eval()
        if name == "igrec":
            both = Batch(
                dense={"ids": torch.arange(m.num_users), "items": torch.arange(m.num_items)}
            )
            groups = Batch(dense={"ids": torch.arange(m.num_groups)})
            return {
                "user": m.query(both),
                "item": m.item_reps(both),
                "group": m.query(groups, "group"),
            }
        b = Batch(sparse={"ebc": lookup_kjt(torch.arange(m.num_users), torch.arange(m.num_items))})
        return {"user": m.query(b), "item": m.item_reps(b)}


def main(name: str, out: str, steps: int, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    run(name, out, steps, overrides)
    destroy_distributed()  # after run()'s frame, the session's last reference, is gone


def run(name: str, out: str, steps: int, overrides: list[str]) -> None:
    s = build_session(name, overrides=overrides, write_config=False)
    losses: list[float] = []
    tables1: dict[str, torch.Tensor] = {}
    epoch = 0
    while len(losses) < steps:
        for batch in s.data.train_batches(epoch):
            losses.append(train_step(s, batch))
            if len(losses) == 1:
                tables1 = _tables(s, name)
            if len(losses) == steps:
                break
        epoch += 1
    s.wrapped.eval()
    reps = _reps(s, name)
    res = evaluate_split(s.model, s.data, "test", num_items=s.model.num_items, ks=[5, 10])
    halo = getattr(getattr(s.model, "_pg", None), "halo", None)
    if s.env.rank == 0:
        torch.save(
            {"losses": losses, "tables1": tables1, "reps": reps, "metrics": res.metrics,
             "halo_rows": None if halo is None else halo.size},
            out,
        )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
