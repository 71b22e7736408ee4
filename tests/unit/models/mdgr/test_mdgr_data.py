"""MDGR data adapter: recency days, chunks-protocol candidates, rank slices of the global batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distrec.data.schema import EVAL_ROWS, SEQUENCES, Manifest, TableInfo, schema_to_json
from distrec.models.common.sequence_data import SequenceDataOptions
from distrec.models.mdgr.data import MDGRData, recency_days

DAY = 86400


def _write(root: Path, users: int = 6, items: int = 40, length: int = 12) -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.choice(items, size=length, replace=False).tolist() for _ in range(users)]
    ts = [(np.arange(length) * DAY * (u + 1)).tolist() for u in range(users)]
    (root / "sequences").mkdir(parents=True)
    pq.write_table(
        pa.table({"user": list(range(users)), "items": seqs, "ts": ts}, schema=SEQUENCES),
        root / "sequences" / "part-0.parquet",
    )
    for split in ("train", "valid", "test"):
        d = root / "eval" / "chunks" / f"split={split}"
        d.mkdir(parents=True)
        rows = {
            "user": list(range(users)),
            "input": [s[:6] for s in seqs],
            "input_ts": [t[:6] for t in ts],
            "targets": [s[6:] for s in seqs],
            "candidates": [[(x + 1) % items for x in s[:3]] for s in seqs],
        }
        pq.write_table(pa.table(rows, schema=EVAL_ROWS), d / "part-0.parquet")
    info = {
        "sequences": TableInfo("sequences", users, schema_to_json(SEQUENCES)),
        "eval/chunks": TableInfo("eval/chunks", 2 * users, schema_to_json(EVAL_ROWS), "split"),
    }
    Manifest(
        name="t",
        source="test",
        counts={"users": users, "items": items},
        behaviors=["click"],
        split={"protocol": "chunks"},
        tables=info,
    ).write(str(root))


def _data(root: Path, rank: int = 0, world: int = 1, batch_size: int = 8) -> MDGRData:
    # 2 shards of the 6 one-row-group chunks (3 chunks, 9 samples each)
    opts = SequenceDataOptions(
        max_len=5, num_candidates=2, batch_size=batch_size, eval_batch_size=4, protocol="chunks",
        partitions=2,
    )  # fmt: skip
    return MDGRData(str(root), opts, rank, world)


def test_recency_days() -> None:
    ts = np.array([0, DAY, 3 * DAY, 10 * DAY, 12 * DAY])
    out = recency_days(ts, np.array([3, 2]), max_len=4)
    np.testing.assert_allclose(out, [[3, 2, 0, 0], [2, 0, 0, 0]])


def test_train_batches_carry_days_and_split_by_rank(tmp_path: Path) -> None:
    _write(tmp_path)
    one = _data(tmp_path)
    halves = [_data(tmp_path, r, 2) for r in range(2)]
    assert one.num_train_steps(0) == halves[0].num_train_steps(0) == halves[1].num_train_steps(0)
    for b1, *parts in zip(one.train_batches(0), *(h.train_batches(0) for h in halves), strict=True):
        days = b1.dense["hist_days"]
        assert days.shape == (8, 5) and (days >= 0).all()
        # the newest history item has recency 0
        lengths = b1.sparse["ec"]["hist"].lengths()
        assert torch.all(days[torch.arange(8), lengths - 1] == 0)
        # each rank's rows sit at its global positions of the one-rank batch
        merged = torch.zeros_like(days)
        for h, p in zip(halves, parts, strict=True):
            merged[torch.from_numpy(h.stream.global_positions)] = p.dense["hist_days"]
        torch.testing.assert_close(merged, days)


def test_chunk_queries_rank_targets_among_their_negatives(tmp_path: Path) -> None:
    _write(tmp_path)
    qs = list(_data(tmp_path).eval_queries("test"))
    assert sum(len(q.targets) for q in qs) == 6
    for q in qs:
        assert q.candidates is not None
        for t, c in zip(q.targets, q.candidates, strict=True):
            assert c[: len(t)] == t and len(c) == len(t) + 3
        assert q.batch.dense["hist_days"].shape == (len(q.targets), 5)


def test_chunk_training_samples_pair_each_target_with_its_negative(tmp_path: Path) -> None:
    _write(tmp_path)
    data = _data(tmp_path, batch_size=18)  # the whole epoch in one step
    # 6 chunks, each min(6 targets, 3 negatives) = 3 samples
    assert data.num_samples == 18 and data.num_train_steps(0) == 1
    table = pq.read_table(tmp_path / "eval" / "chunks" / "split=train" / "part-0.parquet")
    targets, cands = table.column("targets").to_pylist(), table.column("candidates").to_pylist()
    batch = next(iter(data.train_batches(0)))
    kjt = batch.sparse["ec"]
    pos, neg = kjt["pos"].values().tolist(), kjt["neg"].values().tolist()
    # every (chunk, j) once: its j-th target with its j-th negative, as the batch carries them
    got = [
        (int(c), int(j))
        for s in data.stream.step_slices(0, 0)
        for c, j in zip(s.row, s.t, strict=True)
    ]
    assert sorted(got) == [(c, j) for c in range(6) for j in range(3)]
    assert list(zip(pos, neg, strict=True)) == [(targets[c][j], cands[c][j]) for c, j in got]
    assert kjt["hist"].lengths().tolist() == [5] * 18  # the last max_len of the 6 inputs
    assert batch.dense["hist_days"].shape == (18, 5)
