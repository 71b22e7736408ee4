"""InteractionData: KJT layout, world-size invariance of batches, eval queries and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distrec.data.interactions import InteractionData
from tests.helpers.bundles import write_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(
        tmp_path_factory.mktemp("b") / "bundle",
        users=60,
        items=40,
        behaviors=("view", "buy"),
        eval_candidates=10,
    )


def _ids(batch, key: str) -> torch.Tensor:  # noqa: ANN001
    return batch.sparse["ebc"][key].values()


def test_batch_layout(bundle: Path) -> None:
    d = InteractionData(bundle, batch_size=32, num_negatives=3, prefetch=2)
    batches = list(d.train_batches(0))
    # shards are near-equal: at most a few steps beyond ceil(rows / G) of wrap-around fill
    assert len(batches) == d.num_train_steps(0) >= -(-d.num_train_rows // 32)
    assert d.num_train_rows == d.bundle.graph("ui.buy").nnz
    b = batches[0]
    kjt = b.sparse["ebc"]
    assert kjt.keys() == ["user", "pos", "neg"] and b.size == 32
    assert kjt["user"].lengths().tolist() == [1] * 32
    assert kjt["neg"].lengths().tolist() == [3] * 32
    u, p, n = _ids(b, "user"), _ids(b, "pos"), _ids(b, "neg").view(32, 3)
    # positives are train buy pairs; negatives are not
    train = d.bundle.graph("ui.buy")
    assert train.contains(u.numpy(), p.numpy()).all()
    assert not train.contains(u.numpy()[:, None].repeat(3, 1), n.numpy()).any()
    assert d.data_wait_seconds >= 0.0


def test_two_ranks_see_the_global_batch(bundle: Path) -> None:
    one = InteractionData(bundle, 0, 1, batch_size=20, num_negatives=2, prefetch=0)
    two = [
        InteractionData(bundle, r, 2, batch_size=20, num_negatives=2, prefetch=1) for r in (0, 1)
    ]
    assert one.num_train_steps(1) == two[0].num_train_steps(1) == two[1].num_train_steps(1)

    def rows(*bs) -> list[tuple[int, ...]]:  # noqa: ANN002 - (user, pos, negs) of each sample
        cols = [torch.cat([_ids(b, "user") for b in bs]), torch.cat([_ids(b, "pos") for b in bs])]
        neg = torch.cat([_ids(b, "neg").view(-1, 2) for b in bs])
        return sorted(zip(*(c.tolist() for c in cols), map(tuple, neg.tolist()), strict=True))

    for ref, b0, b1 in zip(
        one.train_batches(1), two[0].train_batches(1), two[1].train_batches(1), strict=True
    ):
        assert rows(b0, b1) == rows(ref)  # the same samples and negatives, in another order


def test_eval_queries_full_ranking(bundle: Path) -> None:
    world = 3
    parts = [
        list(InteractionData(bundle, r, world, eval_batch_size=16).eval_queries("test"))
        for r in range(world)
    ]
    assert len({len(p) for p in parts}) == 1
    d = InteractionData(bundle)
    users = torch.cat([q.ids for p in zip(*parts, strict=True) for q in p])
    assert sorted(users.tolist()) == list(range(60))  # every user has test items, seen once
    valid = d.heldout("valid")
    test = d.heldout("test")
    for p in parts:
        for q in p:
            assert q.candidates is None
            kjt = q.batch.sparse["ebc"]
            assert kjt.keys() == ["user", "pos", "neg"] and kjt["pos"].values().numel() == 0
            for u, tg, ex in zip(q.ids.tolist(), q.targets, q.exclude, strict=True):
                assert sorted(tg) == test.row(u)[0].tolist()
                train_u = d.target_train.row(u)[0].tolist()
                assert set(train_u) | set(valid.row(u)[0].tolist()) == set(ex)
                assert not set(tg) & set(ex)


def test_exclude_is_target_behavior_only(bundle: Path) -> None:
    d = InteractionData(bundle, behaviors=["view", "buy"])
    assert d.num_train_rows > d.target_train.nnz  # training uses both behaviors
    q = next(iter(d.eval_queries("valid")))
    for u, ex in zip(q.ids.tolist(), q.exclude, strict=True):
        assert ex == d.target_train.row(u)[0].tolist()


def test_sampled_candidates_and_item_batch(bundle: Path) -> None:
    d = InteractionData(bundle, candidates=True)
    q = next(iter(d.eval_queries("valid")))
    assert q.candidates is not None
    assert all(set(t) <= set(c) for t, c in zip(q.targets, q.candidates, strict=True))
    ib = d.item_batch(torch.arange(5))
    kjt = ib.sparse["ebc"]
    assert kjt["pos"].values().tolist() == [0, 1, 2, 3, 4] and kjt["user"].values().numel() == 0
    np.testing.assert_array_equal(kjt["neg"].lengths().numpy(), [0] * 5)


def test_worker_process_gives_the_same_batches(bundle: Path) -> None:
    ref = InteractionData(bundle, 1, 2, batch_size=24, num_negatives=2, prefetch=0)
    proc = InteractionData(bundle, 1, 2, batch_size=24, num_negatives=2, prefetch=2, workers=1)
    a, b = list(ref.train_batches(3, start_step=2)), list(proc.train_batches(3, start_step=2))
    assert len(a) == len(b) == ref.num_train_steps(3) - 2
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.sparse["ebc"].values(), y.sparse["ebc"].values())
    assert proc.data_wait_seconds > 0.0


def test_no_next_epoch_windows_after_the_last_epoch(bundle: Path) -> None:
    """after_epoch warms epoch E+1's first windows, except after the last one (train.epochs)."""
    for epochs, want in ((2, {0, 1}), (0, {0, 1, 2})):
        d = InteractionData(bundle, batch_size=32, prefetch=0, epochs=epochs)
        for e in (0, 1):
            list(d.train_batches(e))
        assert {r[1] for r in d.stream.reads} == want, epochs
