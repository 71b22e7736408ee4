"""The shared sequence adapter (distrec.models.common): windows, world-size invariance, the
co-occurrence sampler, user_holdout evaluation rows and bad-input errors, on a one-row-group
bundle (the streamed reader's row-range layout; the row-group layout: tests/unit/data/
test_seq_stream.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distrec.data.bundle import Bundle
from distrec.data.schema import SEQUENCES, BundleFormatError
from distrec.models.api import Batch
from distrec.models.common.sequence_data import SequenceData, SequenceDataOptions, sample_cooc
from tests.unit.models.dismir.seq_bundle import write_seq_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_seq_bundle(tmp_path / "b")


def _opts(**kw: object) -> SequenceDataOptions:
    base: dict[str, object] = dict(
        max_len=5,
        num_candidates=3,
        cooc_negatives=7,
        noise_dim=2,
        batch_size=16,
        eval_batch_size=4,
        seed=3,
    )
    base.update(kw)
    return SequenceDataOptions(**base)  # type: ignore[arg-type]


def _sequences(bundle: Path) -> list[list[int]]:
    return Bundle(bundle).table("sequences").column("items").to_pylist()


def _samples(batch: Batch) -> list[tuple[object, ...]]:
    """Every sample of a training batch, in batch order, as (history, positive, negatives,
    co-occurring item or None, noise)."""
    kjt = batch.sparse["ec"]

    def rows(key: str) -> list[list[int]]:
        f = kjt[key]
        return [r.tolist() for r in torch.split(f.values(), f.lengths().tolist())]

    cooc = rows("cooc")
    return [
        (tuple(h), p[0], tuple(n), c[0] if c else None, batch.dense["noise"][i].tolist())
        for i, (h, p, n, c) in enumerate(
            zip(rows("hist"), rows("pos"), rows("neg"), cooc, strict=True)
        )
    ]


def test_training_windows_are_the_last_kappa_items_before_the_target(bundle: Path) -> None:
    data = SequenceData(str(bundle), _opts())
    seqs = _sequences(bundle)
    expected = {(tuple(s[max(0, t - 5) : t]), s[t]) for s in seqs for t in range(1, len(s))}
    assert data.num_samples == sum(len(s) - 1 for s in seqs)
    seen = 0
    for batch in data.train_batches(epoch=0):
        kjt = batch.sparse["ec"]
        assert kjt.keys() == ["hist", "pos", "neg", "cooc", "part_neg"]
        hist = kjt["hist"]
        rows = torch.split(hist.values(), hist.lengths().tolist())
        for h, p in zip(rows, kjt["pos"].values().tolist(), strict=True):
            assert (tuple(h.tolist()), p) in expected
            seen += 1
        assert kjt["neg"].lengths().tolist() == [3] * batch.size
        assert batch.dense["noise"].shape == (batch.size, 5, 2)
        assert int(kjt["part_neg"].lengths().sum()) == 7
    assert seen == data.num_train_steps(0) * 16


def test_two_ranks_see_the_global_batch_of_one_rank(bundle: Path) -> None:
    one = SequenceData(str(bundle), _opts())
    two = [SequenceData(str(bundle), _opts(), rank=r, world_size=2) for r in range(2)]
    assert one.num_train_steps(1) == two[0].num_train_steps(1) == two[1].num_train_steps(1)
    for b1, b20, b21 in zip(
        one.train_batches(1), two[0].train_batches(1), two[1].train_batches(1), strict=True
    ):
        # each rank's samples sit at its global positions of the batch: put together there,
        # they are the one-rank batch, sample for sample (history, positive, negatives, cooc
        # draw, noise)
        merged: list[Any] = [None] * b1.size
        for d, b in ((two[0], b20), (two[1], b21)):
            assert b.size == b1.size // 2
            for g, sample in zip(d.stream.global_positions, _samples(b), strict=True):
                merged[int(g)] = sample
        assert merged == _samples(b1)
        torch.testing.assert_close(
            b1.dense["cooc_mask"], torch.tensor([float(s[3] is not None) for s in merged])
        )
        # shared partition negatives: every rank holds the global batch's list
        k1, k20, k21 = (b.sparse["ec"] for b in (b1, b20, b21))
        assert (
            k1["part_neg"].values().tolist()
            == k20["part_neg"].values().tolist()
            == k21["part_neg"].values().tolist()
        )
    # a different epoch reshuffles
    e0 = next(iter(one.train_batches(0))).sparse["ec"]["pos"].values()
    e1 = next(iter(one.train_batches(1))).sparse["ec"]["pos"].values()
    assert not torch.equal(e0, e1)


def test_cooc_sampler_follows_the_confidence_row(bundle: Path) -> None:
    g = Bundle(bundle).graph("item_cooc")
    assert (g.num_src, g.num_dst) == (48, 48)
    anchor = int(np.argmax(np.diff(g.indptr)))
    nbrs, w = g.row(anchor)
    draws = sample_cooc(g, np.full(40_000, anchor), np.random.default_rng(0))
    freq = np.array([(draws == j).mean() for j in nbrs])
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.015)
    assert set(draws.tolist()) <= set(nbrs.tolist())
    empty = np.flatnonzero(np.diff(g.indptr) == 0)
    if empty.size:
        assert sample_cooc(g, empty[:1], np.random.default_rng(0)).tolist() == [-1]


def test_eval_queries_cover_every_row_once_with_equal_counts_per_rank(bundle: Path) -> None:
    rows = Bundle(bundle).eval_rows("user_holdout", "test").to_pylist()
    per_rank = [
        list(SequenceData(str(bundle), _opts(), r, 2).eval_queries("test")) for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1])
    got = {}
    for queries in per_rank:
        for q in queries:
            hist = q.batch.sparse["ec"]["hist"]
            assert q.batch.sparse["ec"]["pos"].values().numel() == 0
            if q.batch.size == 0:  # a step without own rows: one empty padding query, no ids
                assert hist.lengths().tolist() == [0] and q.ids.numel() == 0 and not q.targets
                continue
            for u, h, t in zip(
                q.ids.tolist(),
                torch.split(hist.values(), hist.lengths().tolist()),
                q.targets,
                strict=True,
            ):
                got[u] = (h.tolist(), t)
    assert got == {r["user"]: (r["input"][-5:], sorted(set(r["targets"]))) for r in rows}


def test_item_batch_carries_only_pos(bundle: Path) -> None:
    b = SequenceData(str(bundle), _opts()).item_batch(torch.tensor([3, 1, 4]))
    kjt = b.sparse["ec"]
    assert kjt["pos"].values().tolist() == [3, 1, 4]
    assert all(kjt[k].values().numel() == 0 for k in ("hist", "neg", "cooc", "part_neg"))


def test_bad_item_id_names_file_row_and_field(bundle: Path) -> None:
    f = bundle / "sequences" / "part-00000.parquet"
    rows = pq.read_table(f).to_pylist()
    rows[30]["items"][2] = 999  # table row 30: inside a shard's window, not its first row
    pq.write_table(pa.Table.from_pylist(rows, schema=SEQUENCES), f)
    data = SequenceData(str(bundle), _opts())  # reads footers only
    with pytest.raises(BundleFormatError, match=r"sequences: row 30, field 'items': id 999"):
        for step in range(data.num_train_steps(0)):
            data.payload(0, step)


def test_epoch_is_every_sample_once_then_the_fill(bundle: Path) -> None:
    """Steps from the footer counts: the fullest shard's samples over its quota; every global
    batch is full, every sample comes once per epoch, the rest of a batch is wrap-around fill."""
    seqs = _sequences(bundle)
    want = {(r, t) for r, s in enumerate(seqs) for t in range(1, len(s))}
    data = SequenceData(str(bundle), _opts(cooc_negatives=0, noise_dim=0))
    st = data.stream
    n = data.num_samples
    assert n == len(want)
    steps = max(-(-data.plan.shard_rows(v) // st.quota[v]) for v in range(data.plan.partitions))
    assert data.num_train_steps(2) == steps
    real: list[tuple[int, int]] = []
    for step in range(steps):
        parts = st.step_slices(2, step)
        assert sum(len(p.pos) for p in parts) == 16
        real += [
            (int(r), int(t))
            for p in parts
            for r, t, f in zip(p.row, p.t, p.fill, strict=True)
            if not f
        ]
    assert len(real) == n and set(real) == want
    # a data set smaller than one global batch trains as one step holding every sample
    big = SequenceData(str(bundle), _opts(batch_size=4 * n, partitions=4), rank=1, world_size=2)
    assert big.num_train_steps(0) == 1
    both = [big, SequenceData(str(bundle), _opts(batch_size=4 * n, partitions=4), 0, 2)]
    got = [(int(r), int(t)) for d in both for p in d.stream.step_slices(0, 0)
           for r, t, f in zip(p.row, p.t, p.fill, strict=True) if not f]  # fmt: skip
    assert sorted(got) == sorted(want)


def test_next_epoch_windows_are_loaded_after_an_epoch_but_the_last(bundle: Path) -> None:
    def epochs_read(epochs: int, run: int) -> set[int]:
        data = SequenceData(str(bundle), _opts(epochs=epochs))
        for e in range(run):
            for _ in data.train_batches(e):
                pass
        return {r[1] for r in data.stream.reads}  # (shard, epoch, window, rows)

    assert epochs_read(0, 1) == {0, 1}  # train.epochs unknown: always the next one
    assert epochs_read(3, 1) == {0, 1}
    assert epochs_read(2, 2) == {0, 1}  # the last epoch warms nothing
