"""torchrun worker for tests/distributed/test_data_plane_igrec.py: one rank of a real gloo group
builds IGRec's data adapter and owned graph rows on a bundle and records what it read.

    python -m torch.distributed.run --nproc_per_node=2 data_plane_igrec_worker.py BUNDLE OUT_DIR

Writes ``OUT_DIR/rank<r>.json``: steps; the (src, item, fill) pairs of every step of epochs 0 and
1 for the user and the group stream; own shards and their src bounds; window loads and rows read
per table by the training streams; the rows the model's owned graph reader read for this rank's
node ranges; this rank's valid/test eval query ids and its eval step counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from distrec.data.bundle import Bundle
from distrec.distributed.env import destroy_distributed
from distrec.graph.partition import NodePartition
from distrec.models.igrec.data import IGRecData
from distrec.models.igrec.graphs import BundleGraphs


def _pairs(parts: list) -> list[list]:
    return [
        [int(u), int(i), bool(f)]
        for p in parts
        for u, i, f in zip(p.users, p.items, p.fill, strict=True)
    ]


def main(bundle: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = IGRecData(
        bundle, target_behavior=0, batch_size=64, eval_batch_size=16, num_negatives=2,
        rank=rank, world=world, seed=3, buffer_rows=40,
    )  # fmt: skip
    steps = data.num_train_steps(0)
    assert data.gstream is not None
    epochs, gepochs = [], []
    for epoch in (0, 1):
        epochs.append([_pairs(data.stream.step_slices(epoch, t)) for t in range(steps)])
        gepochs.append([_pairs(data.gstream.step_slices(epoch, t)) for t in range(steps)])
    p = data.payload(1, 1)["dense"]  # the last epoch's windows are still loaded: no read
    train_read = dict(data.bundle.rows_read)
    m = Bundle(bundle).manifest
    part = NodePartition(
        {"user": m.num_users, "item": m.num_items, "group": m.num_groups}, world, rank
    )
    graphs = BundleGraphs(bundle)
    ranges = {t: part.range(t) for t in ("user", "item", "group")}
    graphs.owned(ranges, member_cap=0)
    queries = {}
    for task in ("user", "group"):
        for split in ("valid", "test"):
            qs = [q.ids.tolist() for q in data.eval_queries(split, task)]
            queries[f"{task}/{split}"] = qs
    rec = {
        "rank": rank,
        "steps": steps,
        "shards": data.stream.shards,
        "bounds": [data.plan.bounds[v] for v in data.stream.shards],
        "gbounds": [data.gplan.bounds[v] for v in data.gstream.shards],
        "epochs": epochs,
        "gepochs": gepochs,
        "reads": data.stream.reads,
        "greads": data.gstream.reads,
        "train_rows_read": train_read,
        "graph_rows_read": graphs.rows_read,
        "ranges": ranges,
        "queries": queries,
        "neg_shape": list(p["neg"].shape),
        "gneg_shape": list(p["gneg"].shape),
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(rec, default=_np))
    dist.barrier()
    destroy_distributed()


def _np(x: object) -> object:
    if isinstance(x, np.integer):
        return int(x)
    raise TypeError(type(x))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
