"""Worker of test_cigf_distributed.py, launched by torchrun: train CIGF for two epochs with the
engine's session (DMP over row-wise tables) and save the per-step global losses and, in full
mode, the propagated representations.

Usage: torchrun --nproc_per_node=W cigf_dist_worker.py OUT.pt key=value ...
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from distrec.distributed.env import destroy_distributed
from distrec.engine.session import build_session


def main(out: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    s = build_session("cigf", overrides=overrides, write_config=False)
    losses = []
    for epoch in range(2):
        for batch in s.data.train_batches(epoch):
            loss, _ = s.wrapped(batch)
            s.optimizer.zero_grad()
            loss.backward()
            s.optimizer.step()
            g = loss.detach().clone()  # rank losses are slice sums / slice size: average them
            dist.all_reduce(g)
            losses.append(float(g) / dist.get_world_size())
    s.wrapped.eval()
    with torch.no_grad():
        s.model.prepare_eval()
        q = next(iter(s.data.eval_queries("valid")))
        reps = s.model.query(q.batch)
    gathered = [torch.zeros(0) for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, (q.ids, reps))
    if s.env.rank == 0:
        ids = torch.cat([g[0] for g in gathered])
        torch.save({"losses": losses, "ids": ids, "reps": torch.cat([g[1] for g in gathered])}, out)
    destroy_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
