"""torchrun worker for tests/distributed/test_data_plane.py: one rank of a real gloo group reads
its shards of a bundle and records what it read and yielded.

    python -m torch.distributed.run --nproc_per_node=2 data_plane_worker.py BUNDLE OUT_DIR [k=v ...]

Writes ``OUT_DIR/rank<r>.json``: steps, the (user, item, fill) pairs of every step of epochs 0 and
1, rows read per table, window loads, and (with ``cigf_sampled=1``) the lookup stride of every
sampled CIGF step, agreed over the ranks by the batch assembly's all-reduce.

    ... data_plane_worker.py eval MODEL OUT_DIR EVAL_BATCH key=value ...

builds MODEL's session (``config=PATH`` and overrides key=value) and evaluates ``valid`` twice with the same
weights: global eval batches of EVAL_BATCH (chosen so that one user is left for the last step,
i.e. an empty slice on rank 1) and of one batch holding every query; writes
``OUT_DIR/eval<r>.json`` with both results' query counts and metrics.

    ... data_plane_worker.py seq OUT_DIR MODEL@BUNDLE@CONFIG[@k=v...] ...

records what DisMIR's / MDGR's streamed sequence data read and yielded (see seq_main).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
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


def eval_main(model: str, out: str, eval_batch: int, overrides: list[str]) -> None:
    from distrec.engine.runs import _eval
    from distrec.engine.session import build_session

    torch.set_num_threads(1)
    config = next((o.split("=", 1)[1] for o in overrides if o.startswith("config=")), None)
    overrides = [o for o in overrides if not o.startswith("config=")]
    s = build_session(model, config_path=config, overrides=overrides, write_config=False)
    rec = {}
    for name, eb in (("remainder", eval_batch), ("whole", 1 << 20)):
        _set_eval_batch(s.data, eb)
        res = _eval(s, "valid", "user")
        rec[name] = {"queries": res.num_queries, "metrics": res.metrics}
    Path(out, f"eval{dist.get_rank()}.json").write_text(json.dumps(rec))
    dist.barrier()
    del s
    destroy_distributed()


def seq_main(out: str, cases: list[str]) -> None:
    """``seq OUT_DIR MODEL@BUNDLE@CONFIG ...``: each case's data adapter (the model's
    ``build_data``, streamed) on this rank: the (row, position, fill) samples of every step of
    epochs 0 and 1, the rows read per table and the window loads; eval query ids per step.
    Writes ``OUT_DIR/seq<r>.json`` {case: record}."""
    from distrec.config import load_config
    from distrec.models.registry import get_spec

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    rec: dict[str, object] = {}
    for case in cases:
        model, bundle, config, *over = case.split("@")
        cfg = load_config(model, config, [f"data.bundle={bundle}", *over])
        data = get_spec(model).build_data(cfg, bundle, rank, world)
        steps = data.num_train_steps(0)
        epochs = [
            [
                [[int(r), int(t), bool(f)] for s in data.stream.step_slices(e, k)
                 for r, t, f in zip(s.row, s.t, s.fill, strict=True)]
                for k in range(steps)
            ]
            for e in (0, 1)
        ]  # fmt: skip
        sizes = [len(step) for step in epochs[0]]
        train_read = dict(data.bundle.rows_read)  # (MDGR's chunks share the eval table name)
        evals = [[int(i) for i in q.ids] for q in data.eval_queries("valid")]
        rec[model] = {
            "steps": steps, "epochs": epochs, "sizes": sizes, "shards": data.stream.shards,
            "shard_rows": {str(v): sum(f.hi - f.lo for f in data.plan.fragments[v])
                           for v in data.stream.shards},
            "table_rows": data.plan.total_table_rows, "eval": evals,
            "rows_read": train_read, "reads": data.stream.reads,
        }  # fmt: skip
    Path(out, f"seq{rank}.json").write_text(json.dumps(rec, default=_np))
    dist.barrier()
    destroy_distributed()


def _set_eval_batch(data: object, eb: int) -> None:
    """The adapters keep the global eval batch under different names."""
    opts = getattr(data, "opts", None)
    if opts is not None and hasattr(opts, "eval_batch_size"):
        opts.eval_batch_size = eb
    for attr in ("eval_batch_size", "eval_batch"):
        if hasattr(data, attr):
            setattr(data, attr, eb)


def _np(x: object) -> object:
    if isinstance(x, np.integer):
        return int(x)
    raise TypeError(type(x))


if __name__ == "__main__":
    if sys.argv[1] == "seq":
        seq_main(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "eval":
        eval_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    else:
        main(sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:]))
