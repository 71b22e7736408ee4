"""The streaming sequence reader (distrec.data.seq_stream) behind DisMIR's and MDGR's data, on
bundles with several row groups per table: every sample once per epoch before the fill, global
batches W-independent (samples, negatives, noise), rows read per rank only its shards' row
groups, several shuffle windows and steps crossing them, the chunks protocol, eval shares, seek ==
run through. The same on real gloo ranks: tests/distributed/test_data_plane.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle
from distrec.data.schema import SEQUENCES, BundleFormatError
from distrec.models.common.sequence_data import SequenceData, SequenceDataOptions
from distrec.models.mdgr.data import MDGRData
from tests.unit.data.seq_bundles import write_grouped_chunks_bundle, write_grouped_seq_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grouped_seq_bundle(tmp_path_factory.mktemp("ss") / "b")


@pytest.fixture(scope="module")
def chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grouped_chunks_bundle(tmp_path_factory.mktemp("sc") / "b")


def _opts(**kw: Any) -> SequenceDataOptions:
    base: dict[str, Any] = dict(
        max_len=5, num_candidates=3, cooc_negatives=7, noise_dim=2, batch_size=16,
        eval_batch_size=4, seed=3, partitions=4,
    )  # fmt: skip
    base.update(kw)
    return SequenceDataOptions(**base)


def _seqs(bundle: Path) -> list[list[int]]:
    return Bundle(bundle).table("sequences").column("items").to_pylist()


def _tuples(p: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every sample of a payload as (history, positive, negatives, noise, cooc mask)."""
    f = p["feats"]
    h, hl = f["hist"]
    st = np.concatenate([[0], np.cumsum(hl)])
    nv, nl = f["neg"]
    ns = np.concatenate([[0], np.cumsum(nl)])
    noise = p["dense"].get("noise")
    mask = p["dense"].get("cooc_mask")
    return [
        (
            tuple(h[st[i] : st[i + 1]].tolist()),
            int(f["pos"][0][i]),
            tuple(nv[ns[i] : ns[i + 1]].tolist()),
            () if noise is None else tuple(noise[i].ravel().round(6).tolist()),
            () if mask is None else float(mask[i]),
        )
        for i in range(p["size"])
    ]


@pytest.mark.parametrize("buffer", [1 << 19, 7])
def test_epoch_is_every_sample_once_and_global_batches_do_not_depend_on_w(
    bundle: Path, buffer: int
) -> None:
    """buffer 7: several shuffle windows per shard and steps that cross them."""
    seqs = _seqs(bundle)
    want = Counter((r, t) for r, s in enumerate(seqs) for t in range(1, len(s)))
    one = SequenceData(str(bundle), _opts(shuffle_buffer=buffer))
    two = [SequenceData(str(bundle), _opts(shuffle_buffer=buffer), r, 2) for r in range(2)]
    assert one.plan.footer_only and one.num_samples == sum(want.values())
    steps = one.num_train_steps(0)
    assert steps == two[0].num_train_steps(0) == two[1].num_train_steps(0) > 0
    for epoch in (0, 1):
        got: Counter[tuple[int, int]] = Counter()
        for t in range(steps):
            for d in two:
                for s in d.stream.step_slices(epoch, t):  # type: ignore[union-attr]
                    got.update(
                        (int(r), int(x))
                        for r, x, f in zip(s.row, s.t, s.fill, strict=True)
                        if not f
                    )
            ref = sorted(_tuples(one.payload(epoch, t)))
            parts = [d.payload(epoch, t) for d in two]
            assert [p["size"] for p in parts] == [8, 8]
            assert sorted(_tuples(parts[0]) + _tuples(parts[1])) == ref, (epoch, t)
        assert got == want, epoch
    if buffer == 7:  # the shuffle buffer bounds a window: at most buffer + one row group
        per_group = max(f.rows for fs in one.plan.fragments for f in fs)
        assert max(r[3] for r in one.stream.reads) <= 6  # rows of one row group per window
        assert len({(r[0], r[2]) for r in one.stream.reads}) > one.plan.partitions
        assert per_group < one.plan.total_rows()


def test_each_rank_reads_only_its_row_groups(bundle: Path) -> None:
    seqs = _seqs(bundle)
    two = [SequenceData(str(bundle), _opts(), r, 2) for r in range(2)]
    for d in two:
        for t in range(d.num_train_steps(0)):
            d.payload(0, t)
        st = d.stream
        assert st is not None and {r[0] for r in st.reads} <= set(st.shards)
        own_rows = sum(f.hi - f.lo for v in st.shards for f in d.plan.fragments[v])
        assert d.bundle.rows_read["sequences"] == own_rows  # one window per shard, read once
    assert sum(d.bundle.rows_read["sequences"] for d in two) == len(seqs)


def test_eval_steps_and_reads_are_rank_shares(bundle: Path) -> None:
    rows = Bundle(bundle).eval_rows("user_holdout", "valid").to_pylist()
    one = SequenceData(str(bundle), _opts())
    two = [SequenceData(str(bundle), _opts(), r, 2) for r in range(2)]
    q1 = list(one.eval_queries("valid"))
    q2 = [list(d.eval_queries("valid")) for d in two]
    assert len(q1) == len(q2[0]) == len(q2[1]) == one.num_eval_steps("valid")
    for a, b, c in zip(q1, *q2, strict=True):  # global eval step t: the same queries at any W
        ids = sorted(a.ids.tolist())
        assert ids == sorted(b.ids.tolist() + c.ids.tolist())
        n1 = {int(u): a.batch.dense["noise"][k] for k, u in enumerate(a.ids)}
        for q in (b, c):
            for k, u in enumerate(q.ids.tolist()):
                np.testing.assert_array_equal(q.batch.dense["noise"][k].numpy(), n1[u].numpy())
    assert sorted(int(u) for q in q1 for u in q.ids) == sorted(r["user"] for r in rows)
    read = [d.bundle.rows_read["eval/user_holdout"] for d in two]
    assert sum(read) == len(rows) and min(read) > 0  # each rank read its share only


def test_seek_equals_run_through_and_reads_only_that_steps_windows(bundle: Path) -> None:
    run = SequenceData(str(bundle), _opts(shuffle_buffer=7), 1, 2)
    steps = run.num_train_steps(1)
    through = [run.payload(1, t) for t in range(steps)]
    k = steps // 2
    seek = SequenceData(str(bundle), _opts(shuffle_buffer=7), 1, 2)
    assert _tuples(seek.payload(1, k)) == _tuples(through[k])
    # the seek loaded only the windows that hold step k's samples
    st = seek.stream
    assert st is not None and len(st.reads) <= 2 * len(st.shards)
    assert seek.data_state(1, k)["shards"] == run.data_state(1, k)["shards"]


def test_chunks_pair_each_target_with_its_negative_once_per_epoch(chunks: Path) -> None:
    t = Bundle(chunks).table("eval/chunks", split="train").to_pylist()
    opts = dict(num_candidates=1, protocol="chunks", cooc_negatives=0, noise_dim=0, batch_size=8)
    one = MDGRData(str(chunks), _opts(**opts))
    two = [MDGRData(str(chunks), _opts(**opts), r, 2) for r in range(2)]
    pairs = {(r, j): (row["targets"][j], row["candidates"][j])
             for r, row in enumerate(t) for j in range(min(len(row["targets"]), len(row["candidates"])))}  # fmt: skip
    steps = one.num_train_steps(0)
    assert steps == two[0].num_train_steps(0) == two[1].num_train_steps(0)
    got: Counter[tuple[int, int]] = Counter()
    for step in range(steps):
        for d in two:
            for s in d.stream.step_slices(0, step):  # type: ignore[union-attr]
                assert s.neg is not None
                for r, j, p, n, f in zip(s.row, s.t, s.pos, s.neg, s.fill, strict=True):
                    assert pairs[(int(r), int(j))] == (int(p), int(n))
                    got[(int(r), int(j))] += not f
        p1 = one.payload(0, step)
        p2 = [d.payload(0, step) for d in two]
        assert sorted(_tuples(p1)) == sorted(_tuples(p2[0]) + _tuples(p2[1]))
        days = np.concatenate([p["dense"]["hist_days"] for p in p2])
        assert sorted(map(tuple, days.tolist())) == sorted(
            map(tuple, p1["dense"]["hist_days"].tolist())
        )
    assert got == Counter(pairs.keys())


def test_empty_sequence_in_a_footer_counted_table_is_an_error(tmp_path: Path) -> None:
    root = write_grouped_seq_bundle(tmp_path / "b")
    f = sorted((root / "sequences").glob("*.parquet"))[0]
    t = pq.read_table(f).to_pylist()
    t[1]["items"], t[1]["ts"] = [], []
    pq.write_table(pa.Table.from_pylist(t, schema=SEQUENCES), f, row_group_size=6)
    d = SequenceData(str(root), _opts())
    with pytest.raises(BundleFormatError, match="row 1, field 'items': empty sequence"):
        for step in range(d.num_train_steps(0)):
            d.payload(0, step)


def test_an_epoch_loads_each_window_once_plus_the_first_again_for_the_fill(bundle: Path) -> None:
    """The wrap-around step meets the last window, then the first: the last stays cached, so
    only the first window is loaded a second time (for the fill), and only by shards with fill."""
    d = SequenceData(str(bundle), _opts(shuffle_buffer=7, batch_size=24))
    st = d.stream
    assert st is not None
    for t in range(d.num_train_steps(0)):
        st.step_slices(0, t)
    for v in st.shards:
        se = st._epoch(v, 0)
        n = int(se.starts[-1])
        loads = [r[2] for r in st.reads if r[0] == v]
        wraps = st.num_steps() * st.quota[v] > n
        assert loads == list(range(len(se.windows))) + ([0] if wraps else []), v
    # the case that matters was met: a shard's wrap-around step mixes its last and first window
    assert any(int(st._epoch(v, 0).starts[-1]) % st.quota[v] for v in st.shards)
