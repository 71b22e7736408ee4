"""A 2-rank sharded MDGR run (torchrun, gloo, row-wise item table) matches a 1-rank run.

Real processes: :mod:`tests.helpers.session_worker` builds the engine's session (``shard_model``:
DMP over the configured plan, fused sparse optimizer), trains two epochs on a tiny synthetic
``chunks`` bundle and records the global loss of every step, then the packed query states of the
first ``valid`` batch (encoded items, days, mask) gathered from every rank. Dropout is off so the
two world sizes compute the same function. Ports 29800-29849 belong to MDGR.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distrec.data.schema import EVAL_ROWS, SEQUENCES, Manifest, TableInfo, schema_to_json
from tests.helpers.torchrun import run_session_worker

DAY = 86400
USERS, ITEMS, LENGTH, INPUT = 16, 40, 16, 8


def write_chunks_bundle(root: Path) -> Path:
    """``USERS`` sequences of ``LENGTH`` distinct items, one chunk per user and split: the first
    ``INPUT`` items are the input, the rest the targets, ``LENGTH - INPUT`` sampled unseen items
    the negatives. Items prefer one of four clusters per user (something to learn)."""
    rng = np.random.default_rng(0)
    seqs, ts = [], []
    for u in range(USERS):
        p = np.where(np.arange(ITEMS) % 4 == u % 4, 4.0, 1.0)
        seqs.append(rng.choice(ITEMS, size=LENGTH, replace=False, p=p / p.sum()).tolist())
        ts.append(np.cumsum(rng.integers(0, 3 * DAY, LENGTH)).tolist())
    (root / "sequences").mkdir(parents=True)
    pq.write_table(
        pa.table({"user": list(range(USERS)), "items": seqs, "ts": ts}, schema=SEQUENCES),
        root / "sequences" / "part-0.parquet",
    )
    for split in ("train", "valid", "test"):
        d = root / "eval" / "chunks" / f"split={split}"
        d.mkdir(parents=True)
        negs = [
            rng.choice(sorted(set(range(ITEMS)) - set(s)), LENGTH - INPUT, replace=False).tolist()
            for s in seqs
        ]
        rows = {
            "user": list(range(USERS)),
            "input": [s[:INPUT] for s in seqs],
            "input_ts": [t[:INPUT] for t in ts],
            "targets": [s[INPUT:] for s in seqs],
            "candidates": negs,
        }
        pq.write_table(pa.table(rows, schema=EVAL_ROWS), d / "part-0.parquet")
    info = {
        "sequences": TableInfo("sequences", USERS, schema_to_json(SEQUENCES)),
        "eval/chunks": TableInfo("eval/chunks", 3 * USERS, schema_to_json(EVAL_ROWS), "split"),
    }
    Manifest(
        name="mdgr-dist",
        source="test",
        counts={"users": USERS, "items": ITEMS},
        behaviors=["click"],
        split={"protocol": "chunks"},
        tables=info,
    ).write(str(root))
    return root


# A tiny MDGR trained with SGD on the chunks bundle (also used by the sharding-type tests).
TINY_MDGR = [
    "data.batch_size=32",  # 16 chunks x 8 (target, negative) pairs: 4 steps an epoch
    "data.eval_batch_size=8",
    "model.dim=8",
    "model.time_dim=4",
    "model.pos_dim=4",
    "model.max_len=6",
    "model.interests=3",
    "model.iterations=2",
    "model.sim_heads=2",
    "model.kmeans_steps=3",
    "model.weight_hidden=8",
    "model.dropout=0",
    "train.sparse_optimizer=sgd",
    "train.sparse_lr=0.5",
    "train.dense_optimizer=sgd",
    "train.lr=0.1",
    "metrics.enabled=false",
]


def _run(world: int, port: int, bundle: Path, tmp: Path) -> dict[str, Any]:
    overrides = [
        f"data.bundle={bundle}",
        *TINY_MDGR,
        "sharding.default=row_wise",
        f"run.dir={tmp / f'run{world}'}",
    ]
    return run_session_worker("mdgr", world, port, tmp / f"w{world}.pt", "query_reps", overrides)


@pytest.mark.timeout(300)
def test_mdgr_two_ranks_match_one_rank(tmp_path: Path) -> None:
    bundle = write_chunks_bundle(tmp_path / "b")
    # Both launches at once: process start-up (torchrec import) dominates the time.
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(_run, w, port, bundle, tmp_path) for w, port in ((1, 29800), (2, 29801))
        ]
        one, two = (j.result() for j in jobs)
    assert len(one["losses"]) == len(two["losses"]) == 8
    assert one["losses"][-1] < one["losses"][0]  # it trained
    torch.testing.assert_close(
        torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-5
    )
    order1, order2 = one["ids"].argsort(), two["ids"].argsort()
    torch.testing.assert_close(two["ids"][order2], one["ids"][order1])
    # packed states after training: equal encoders and equal (sharded) item tables
    torch.testing.assert_close(two["reps"][order2], one["reps"][order1], rtol=1e-3, atol=1e-5)
