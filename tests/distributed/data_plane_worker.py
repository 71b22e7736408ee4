"""torchrun worker for tests/distributed/test_data_plane.py: one rank of a real gloo group reads
its shards of a bundle and records what it read and yielded.

    python -m torch.distributed.run --nproc_per_node=2 data_plane_worker.py BUNDLE OUT_DIR [k=v ...]

Writes ``OUT_DIR/rank<r>.json``: steps, the (user, item, fill) pairs of every step of epochs 0 and
1, rows read per table, window loads, and (with ``cigf_sampled=1``) the lookup stride of every
sampled CIGF step, agreed over the ranks by the batch assembly's all-reduce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from distrec.data.bundle import Bundle
from distrec.data.interactions import InteractionData
from distrec.distributed.env import destroy_distributed


def main(bundle: str, out: str, opts: dict[str, str]) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = int(opts.get("batch", 64))
    data = InteractionData(Bundle(bundle), rank, world, batch_size=batch, prefetch=0)
    steps = data.num_train_steps(0)
    epochs = []
    for epoch in (0, 1):
        per_step = []
        for step in range(steps):
            parts = data.stream.step_slices(epoch, step)
            per_step.append(
                [
                    [int(u), int(i), bool(f)]
                    for p in parts
                    for u, i, f in zip(p.users, p.items, p.fill, strict=True)
                ]
            )
        epochs.append(per_step)
    rec = {
        "rank": rank,
        "world": world,
        "steps": steps,
        "shards": data.stream.shards,
        "bounds": [data.plan.bounds[v] for v in data.stream.shards],
        "epochs": epochs,
        "rows_read": data.bundle.rows_read,
        "reads": data.stream.reads,
        "batch_sizes": [len(s) for s in epochs[0]],
    }
    if opts.get("cigf_sampled") == "1":
        from distrec.config import load_config
        from distrec.models.cigf import build_data

        cfg = load_config(
            "cigf",
            None,
            [f"data.bundle={bundle}", "data.batch_size=16", "data.prefetch=0", "graph.layers=2",
             "graph.mode=sampled", "graph.fanout=[2]", "model.embedding_dim=4"],
        )  # fmt: skip
        cd = build_data(cfg, bundle, rank, world)
        rec["cigf"] = [
            [int(b.sparse["ebc"].stride()), *map(int, b.dense["n_nodes"])]
            for b, _ in zip(cd.train_batches(0), range(6), strict=False)
        ]
    Path(out, f"rank{rank}.json").write_text(json.dumps(rec, default=_np))
    dist.barrier()
    destroy_distributed()


def _np(x: object) -> object:
    if isinstance(x, np.integer):
        return int(x)
    raise TypeError(type(x))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:]))
