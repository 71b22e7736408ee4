"""The streaming reader on a graph with many row groups per shard (several shuffle windows, steps
that cross windows): world-size independence, every pair once per epoch, seek == run through."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle
from distrec.data.interactions import InteractionData
from tests.helpers.bundles import write_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_tiny_bundle(
        tmp_path_factory.mktemp("st") / "b", users=400, items=100, per_user=10, graph_parts=4
    )
    for f in (root / "graphs" / "ui.buy").glob("*.parquet"):  # 10 users per row group
        pq.write_table(pq.read_table(f), f, row_group_size=10)
    return root


def make(bundle: Path, rank: int, world: int, **kw: int) -> InteractionData:
    return InteractionData(bundle, rank, world, batch_size=48, num_negatives=2, prefetch=0,
                           partitions=8, buffer_rows=60, **kw)  # fmt: skip


def samples(datas: list[InteractionData], epoch: int, step: int) -> list[tuple[int, ...]]:
    out = []
    for d in datas:
        u, p, n = d.payload(epoch, step)
        out += [(a, b, *c) for a, b, c in zip(u.tolist(), p.tolist(), n.tolist(), strict=True)]
    return sorted(out)


def test_windows_cross_and_batches_match_across_world_sizes(bundle: Path) -> None:
    one, two = [make(bundle, 0, 1)], [make(bundle, r, 2) for r in range(2)]
    se = one[0].stream._epoch(0, 0)
    assert len(se.windows) > 2  # several shuffle windows per shard
    steps = one[0].num_train_steps(0)
    assert steps == two[0].num_train_steps(0) == two[1].num_train_steps(0)
    graph = Bundle(bundle).graph("ui.buy")
    for t in range(steps):
        got = samples(one, 0, t)
        assert got == samples(two, 0, t)
        users = np.array([s[0] for s in got])
        negs = np.array([s[2:] for s in got])
        assert not graph.contains(users[:, None].repeat(2, 1), negs).any()


def test_every_pair_once_then_fill(bundle: Path) -> None:
    d = make(bundle, 0, 1)
    graph = d.bundle.graph("ui.buy")
    want = Counter(zip(graph.sources().tolist(), graph.indices.tolist(), strict=True))
    got: Counter[tuple[int, int]] = Counter()
    for t in range(d.num_train_steps(0)):
        for part in d.stream.step_slices(0, t):
            keep = ~part.fill
            got.update(zip(part.users[keep].tolist(), part.items[keep].tolist(), strict=True))
    assert got == want


def test_seeking_equals_running_through(bundle: Path) -> None:
    ran, sought = make(bundle, 1, 2), make(bundle, 1, 2)
    steps = ran.num_train_steps(1)
    all_batches = [ran.payload(1, t) for t in range(steps)]
    k = steps // 2 + 1
    later = list(sought._payloads(1, start_step=k))
    assert [s for s, _ in later] == list(range(k, steps))
    for (_, got), want in zip(later, all_batches[k:], strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    # the seeking reader loaded only the windows from step k on
    assert len(sought.stream.reads) < len(ran.stream.reads)
