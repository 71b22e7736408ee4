"""Rank sharding (same global batches at any world size, equal step counts) and the prefetcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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


def test_eval_sample_is_seeded_sorted_and_sized() -> None:
    from distrec.data.loader import eval_sample

    a = eval_sample(1000, 50, 3, "valid")
    assert a is not None and len(a) == 50 and len(set(a.tolist())) == 50
    assert (np.diff(a) > 0).all() and a.min() >= 0 and a.max() < 1000
    assert np.array_equal(a, eval_sample(1000, 50, 3, "valid"))  # reproducible
    b = eval_sample(1000, 50, 3, "test")
    assert b is not None and not np.array_equal(a, b)  # per split
    assert eval_sample(1000, 0, 3, "valid") is None and eval_sample(40, 50, 3, "valid") is None


def test_eval_max_users_is_the_same_sample_at_every_world_size(tmp_path: Path) -> None:
    """The owner-range sample (distrec.data.heldout): every rank sends its count and smallest
    keys, and all decide the same max_users queries whatever the world size. Simulated here over
    the ranks' blocks; on real gloo ranks in tests/distributed/test_heldout_ranks.py."""
    from distrec.data.heldout import own_range, sample_decide, sample_message
    from distrec.data.interactions import InteractionData
    from distrec.data.loader import query_keys
    from tests.helpers.bundles import write_tiny_bundle

    b = write_tiny_bundle(tmp_path / "b", users=200, items=60, per_user=8, cooc=False)
    full = InteractionData(str(b), 0, 1, prefetch=0, eval_batch_size=16)
    all_users = np.concatenate([q.ids.numpy() for q in full.eval_queries("valid")])
    one = InteractionData(str(b), 0, 1, prefetch=0, eval_batch_size=16, eval_max_users=37)
    sample = np.concatenate([q.ids.numpy() for q in one.eval_queries("valid")])
    assert len(sample) == len(set(sample.tolist())) == 37
    assert set(sample.tolist()) <= set(all_users.tolist())
    keys = query_keys(all_users, 0, "valid")
    assert len(set(keys.tolist())) == len(keys)  # a bijection: distinct ids, distinct keys
    assert not np.array_equal(keys, query_keys(all_users, 0, "test"))  # per split
    for world in (2, 3, 7):
        blocks = [own_range(200, r, world) for r in range(world)]
        mine = [all_users[(all_users >= lo) & (all_users < hi)] for lo, hi in blocks]
        rows = np.stack([sample_message(query_keys(m, 0, "valid"), 37) for m in mine])
        kept, counts = [], set()
        for m in mine:
            keep, per_rank = sample_decide(rows, query_keys(m, 0, "valid"), 37)
            kept += m[keep].tolist()
            counts.add(tuple(per_rank.tolist()))
        assert sorted(kept) == sorted(sample.tolist()), world
        assert len(counts) == 1 and sum(counts.pop()) == 37  # every rank agrees on the counts


def test_sequence_eval_max_users_is_the_same_sample_at_every_world_size(tmp_path: Path) -> None:
    from distrec.models.common.sequence_data import SequenceData, SequenceDataOptions
    from tests.unit.models.dismir.seq_bundle import write_seq_bundle

    b = str(write_seq_bundle(tmp_path / "b", users=200))  # 20 valid users

    def users(world: int, max_users: int) -> list[int]:
        opts = SequenceDataOptions(eval_batch_size=4, eval_max_users=max_users)
        ranks = [SequenceData(b, opts, r, world) for r in range(world)]
        steps = [list(d.eval_queries("valid")) for d in ranks]
        assert len({len(s) for s in steps}) == 1
        return sorted(int(u) for s in steps for q in s for u in q.ids.tolist())

    every = users(1, 0)
    one, two = users(1, 7), users(2, 7)
    assert len(every) == 20 and one == two and len(set(one)) == 7 and set(one) <= set(every)
