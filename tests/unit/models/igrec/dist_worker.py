"""Worker of test_distributed.py, launched by torchrun: train IGRec a few steps on a bundle with
the engine's session (DMP, explicit plan, fused sparse optimizer) and save what the test compares.

Usage: torchrun --nproc_per_node=W dist_worker.py OUT.pt key=value ...
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from distrec.distributed.env import destroy_distributed
from distrec.engine.session import build_session


def main(out: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    s = build_session("igrec", overrides=overrides, write_config=False)
    losses = []
    for epoch in range(2):
        for batch in s.data.train_batches(epoch):
            loss, _ = s.wrapped(batch)
            s.optimizer.zero_grad()
            loss.backward()
            s.optimizer.step()
            # The global loss is the mean of the ranks' equal-sized slice means.
            g = loss.detach().clone()
            dist.all_reduce(g)
            losses.append(float(g) / dist.get_world_size())
    s.wrapped.eval()
    with torch.no_grad():
        s.model.prepare_eval()
    if s.env.rank == 0:
        cache = s.model._cache
        torch.save({"losses": losses, "user": cache["user"], "group": cache["group"]}, out)
    destroy_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
