"""Rank sharding (same global batches at any world size, equal step counts) and the prefetcher."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from distrec.data.csr import Csr
from distrec.data.loader import Prefetcher, RankShard, epoch_indices, global_batches, step_rng
from distrec.data.sampling import popularity_negatives, uniform_negatives


@pytest.mark.parametrize("num_rows,gb", [(1000, 64), (1000, 100), (37, 8), (5, 8)])
def test_global_batches_same_for_any_world(num_rows: int, gb: int) -> None:
    ref = global_batches(num_rows, gb, seed=3, epoch=2)
    for world in (1, 2, 3, 4):
        per_rank = [epoch_indices(num_rows, gb, r, world, seed=3, epoch=2) for r in range(world)]
        assert len({len(p) for p in per_rank}) == 1, "every rank must run the same number of steps"
        for t, batch in enumerate(ref):
            np.testing.assert_array_equal(np.concatenate([p[t] for p in per_rank]), batch)
    assert all(b.shape == (gb,) for b in ref)  # last batch filled by wrap-around
    # one epoch covers every row
    assert set(np.concatenate(ref).tolist()) == set(range(num_rows))


def test_epochs_shuffle_and_seed_fixed() -> None:
    a = RankShard(500, 50, 0, 1, seed=1)
    assert np.array_equal(np.concatenate(a.indices(0)), np.concatenate(a.indices(0)))
    assert not np.array_equal(np.concatenate(a.indices(0)), np.concatenate(a.indices(1)))
    b = RankShard(500, 50, 0, 1, seed=2)
    assert not np.array_equal(np.concatenate(a.indices(0)), np.concatenate(b.indices(0)))
    d = RankShard(505, 50, 0, 1, seed=1, drop_last=True)
    assert d.num_steps() == 10 and len(d.indices(0)) == 10


def test_prefetcher_order_wait_and_errors() -> None:
    def slow() -> object:
        for i in range(5):
            time.sleep(0.02)
            yield i

    pf = Prefetcher(slow(), depth=2)
    assert list(pf) == [0, 1, 2, 3, 4]
    assert pf.wait_seconds > 0.05  # the consumer had to wait for the slow producer

    def broken() -> object:
        yield 1
        raise RuntimeError("bad row 7")

    with pytest.raises(RuntimeError, match="bad row 7"):
        list(Prefetcher(broken(), depth=1))


def test_prefetcher_close_stops_thread() -> None:
    def endless() -> object:
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    with Prefetcher(endless(), depth=3) as pf:
        assert next(pf) == 0 and next(pf) == 1
    time.sleep(0.05)
    assert threading.active_count() == before


def test_uniform_negatives_exclude_positives() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 400)
    items = rng.integers(0, 20, 400)
    pos = Csr.from_pairs(users, items, 50, 20)
    q = np.arange(50)
    neg = uniform_negatives(q, 20, 8, pos, step_rng(0, 0, 0))
    assert neg.shape == (50, 8) and neg.min() >= 0 and neg.max() < 20
    assert not pos.contains(np.repeat(q, 8).reshape(-1, 8), neg).any()
    # deterministic in (seed, epoch, step)
    again = uniform_negatives(q, 20, 8, pos, step_rng(0, 0, 0))
    np.testing.assert_array_equal(neg, again)
    # roughly uniform over each user's complement: a user with 19 positives gets the one left
    dense = Csr.from_pairs(np.zeros(19, dtype=np.int64), np.arange(19), 1, 20)
    assert (uniform_negatives(np.zeros(4, dtype=np.int64), 20, 5, dense, rng) == 19).all()
    full = Csr.from_pairs(np.zeros(20, dtype=np.int64), np.arange(20), 1, 20)
    with pytest.raises(ValueError, match="user 0 has all 20 items"):
        uniform_negatives(np.zeros(1, dtype=np.int64), 20, 1, full, rng)


def test_popularity_negatives_follow_probs() -> None:
    pos = Csr.from_pairs(np.array([0]), np.array([0]), 1, 4)
    probs = np.array([5.0, 1.0, 0.0, 3.0])
    neg = popularity_negatives(
        np.zeros(4000, dtype=np.int64), probs, 1, pos, np.random.default_rng(1)
    )
    counts = np.bincount(neg.ravel(), minlength=4)
    assert counts[0] == 0 and counts[2] == 0 and 2.0 < counts[3] / counts[1] < 4.0


def _numbers(n: int) -> object:
    for i in range(n):
        yield np.full(3, i)


def _fails() -> object:
    yield np.zeros(1)
    raise ValueError("row 5 field item: bad")


def test_process_prefetcher_order_errors_and_close() -> None:
    from distrec.data.loader import ProcessPrefetcher

    got = [int(a[0]) for a in ProcessPrefetcher(lambda: _numbers(20), depth=2)]
    assert got == list(range(20))
    with pytest.raises(RuntimeError, match="row 5 field item: bad"):
        list(ProcessPrefetcher(_fails, depth=1))
    pf = ProcessPrefetcher(lambda: _numbers(10_000), depth=2)
    assert int(next(pf)[0]) == 0
    pf.close()
    assert not pf._proc.is_alive()
