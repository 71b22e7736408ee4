"""The shared sequence adapter (distrec.models.common): windows, world-size invariance, the
co-occurrence sampler, user_holdout evaluation rows and bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distrec.data.bundle import Bundle
from distrec.data.schema import SEQUENCES, BundleFormatError
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
        k1, k20, k21 = (b.sparse["ec"] for b in (b1, b20, b21))
        for key in ("hist", "pos", "neg", "cooc"):
            torch.testing.assert_close(
                k1[key].values(), torch.cat([k20[key].values(), k21[key].values()])
            )
            torch.testing.assert_close(
                k1[key].lengths(), torch.cat([k20[key].lengths(), k21[key].lengths()])
            )
        # shared partition negatives: every rank holds the global batch's list
        assert (
            k1["part_neg"].values().tolist()
            == k20["part_neg"].values().tolist()
            == k21["part_neg"].values().tolist()
        )
        for key in b1.dense:
            torch.testing.assert_close(b1.dense[key], torch.cat([b20.dense[key], b21.dense[key]]))
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
    t = pa.table(
        {"user": [0, 1], "items": [[1, 2], [3, 999]], "ts": [[0, 1], [0, 1]]}, schema=SEQUENCES
    )
    pq.write_table(t, bundle / "sequences" / "part-00000.parquet")
    with pytest.raises(BundleFormatError, match=r"sequences: row 1, field 'items': id 999"):
        SequenceData(str(bundle), _opts())


def test_epoch_drops_the_partial_batch_unless_it_is_the_only_one(bundle: Path) -> None:
    data = SequenceData(str(bundle), _opts(cooc_negatives=0, noise_dim=0))
    n = data.num_samples
    batches = data.epoch_global_batches(2)
    assert len(batches) == data.num_train_steps(2) == n // 16
    rows = np.concatenate(batches)
    assert all(len(b) == 16 for b in batches) and len(np.unique(rows)) == len(rows)
    # a data set smaller than one global batch trains as one batch of every sample
    big = SequenceData(str(bundle), _opts(batch_size=4 * n), rank=1, world_size=2)
    (only,) = big.epoch_global_batches(0)
    assert big.num_train_steps(0) == 1 and sorted(only.tolist()) == list(range(n))
