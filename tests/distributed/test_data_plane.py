"""The rank-partitioned data plane on real gloo ranks (torchrun subprocesses).

* each rank reads only its shards' rows (rows read are counted per rank and table);
* an epoch's training pairs over all ranks are every train pair exactly once before the
  wrap-around fill, with the same step count and batch size on every rank;
* global batch t at 2 ranks is the same set of pairs as at 1 rank;
* sampled CIGF's lookup stride is agreed over the ranks (the batch assembly's all-reduce).

Resume without rebuilding batches is checked in test_engine_ranks.py (kill and resume).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distrec.data.bundle import Bundle
from distrec.data.interactions import InteractionData
from tests.helpers.bundles import write_tiny_bundle
from tests.helpers.torchrun import torchrun

WORKER = Path(__file__).with_name("data_plane_worker.py")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 16 graph files on the writer's src bounds: the layout of a partitioned (format 2) bundle
    return write_tiny_bundle(
        tmp_path_factory.mktemp("dp") / "b", users=200, items=120, per_user=12, graph_parts=16
    )


@pytest.fixture(scope="module")
def ranks(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("dp_out")
    torchrun(WORKER, [str(bundle), str(out), "cigf_sampled=1"], 2, 29671)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_each_rank_reads_only_its_shards(bundle: Path, ranks: list[dict]) -> None:
    graph = Bundle(bundle).graph("ui.buy")
    has_row = graph.degrees() > 0
    for rec in ranks:
        own = sum(int(has_row[lo:hi].sum()) for lo, hi in rec["bounds"])
        first_pass = [r for r in rec["reads"] if r[1] == 0]
        # every window of its own shards was read once in the epoch (plus the fill's re-reads),
        # and nothing outside its shards: the rows read equal the graph rows of its user ranges
        assert {r[0] for r in rec["reads"]} <= set(rec["shards"])
        distinct = {(r[0], r[1], r[2]): r[3] for r in first_pass}
        assert sum(distinct.values()) == own
        assert rec["rows_read"]["graphs/ui.buy"] == sum(r[3] for r in rec["reads"])
    total = sum(int(has_row[lo:hi].sum()) for rec in ranks for lo, hi in rec["bounds"])
    assert total == int(has_row.sum())  # the shards tile the users
    assert ranks[0]["rows_read"]["graphs/ui.buy"] < int(has_row.sum())


def test_epoch_is_every_pair_once_before_the_fill(bundle: Path, ranks: list[dict]) -> None:
    graph = Bundle(bundle).graph("ui.buy")
    want = Counter(zip(graph.sources().tolist(), graph.indices.tolist(), strict=True))
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0
    assert ranks[0]["batch_sizes"] == ranks[1]["batch_sizes"] == [32] * ranks[0]["steps"]
    for epoch in (0, 1):
        got = Counter(
            (u, i) for rec in ranks for step in rec["epochs"][epoch] for u, i, f in step if not f
        )
        assert got == want
        fill = [(u, i) for rec in ranks for step in rec["epochs"][epoch] for u, i, f in step if f]
        assert set(fill) <= set(want)  # the fill repeats real pairs
        assert len(fill) < 64 * 2  # less than two global batches (near-equal shards)
    # epochs are shuffled differently
    assert ranks[0]["epochs"][0][0] != ranks[0]["epochs"][1][0]


def test_global_batches_do_not_depend_on_the_world_size(bundle: Path, ranks: list[dict]) -> None:
    one = InteractionData(bundle, 0, 1, batch_size=64, prefetch=0)
    assert one.num_train_steps(0) == ranks[0]["steps"]
    for t in range(one.num_train_steps(0)):
        parts = one.stream.step_slices(0, t)
        ref = sorted((int(u), int(i)) for p in parts for u, i in zip(p.users, p.items, strict=True))
        got = sorted((u, i) for rec in ranks for u, i, _ in rec["epochs"][0][t])
        assert got == ref, t


def test_sampled_stride_is_agreed_over_ranks(ranks: list[dict]) -> None:
    a, b = ranks[0]["cigf"], ranks[1]["cigf"]
    assert len(a) == len(b) > 0
    for (sa, *na), (sb, *nb) in zip(a, b, strict=True):
        assert sa == sb == max(na + nb)


# (model, bundle fixture, eval batch leaving one query for the last step, exact, overrides):
# "exact" models score a query independently of the batch it is in; DisMIR draws its routing
# noise per global eval step and sampled CIGF its neighbourhoods, so only the counts compare.
EVAL_CASES = [
    ("mf", "bundle", 199, True, ["config=configs/tiny/mf.yaml"]),
    ("cigf", "group_bundle", 199, True,
     ["config=configs/cigf/synthetic.yaml", "model.embedding_dim=4", "graph.mode=full"]),
    ("cigf", "group_bundle", 199, False,
     ["config=configs/cigf/synthetic.yaml", "model.embedding_dim=4", "graph.fanout=[2]",
      "graph.layers=2"]),
    ("igrec", "group_bundle", 199, True, ["config=configs/igrec/synthetic_groups.yaml", "model.dim=8"]),
    ("dismir", "seq_bundle", 5, False,
     ["config=configs/dismir/gowalla.yaml", "model.dim=8", "model.max_len=6"]),
    ("mdgr", "seq_bundle", 5, True,
     ["config=configs/mdgr/beauty.yaml", "model.dim=8", "model.max_len=6", "model.time_dim=4",
      "model.pos_dim=4"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def group_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(
        tmp_path_factory.mktemp("dpg") / "b",
        users=200, items=120, per_user=12, behaviors=("view", "buy"), groups=20,
    )  # fmt: skip


@pytest.fixture(scope="module")
def seq_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unit.models.dismir.seq_bundle import write_seq_bundle

    return write_seq_bundle(tmp_path_factory.mktemp("dps") / "b")  # 6 valid users


@pytest.mark.parametrize(
    ("model", "fixture", "eval_batch", "exact", "overrides"),
    EVAL_CASES,
    ids=[f"{c[0]}-{'full' if c[3] or c[0] != 'cigf' else 'sampled'}" for c in EVAL_CASES],
)
def test_eval_with_one_query_in_the_last_step(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model: str,
    fixture: str,
    eval_batch: int,
    exact: bool,
    overrides: list[str],
) -> None:
    """2 ranks, (#valid queries) mod eval batch == 1: rank 1's slice of the last step is empty
    (it used to crash TorchRec's zero-stride lookup). Every query is counted once, and for a
    batch-independent model the metrics equal those of one step holding every query."""
    bundle = request.getfixturevalue(fixture)
    port = 29680 + EVAL_CASES.index((model, fixture, eval_batch, exact, overrides))
    args = ["eval", model, str(tmp_path), str(eval_batch), f"data.bundle={bundle}", *overrides]
    torchrun(WORKER, args, 2, port)
    recs = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in range(2)]
    n = recs[0]["whole"]["queries"]
    assert n % eval_batch == 1 and n > eval_batch
    for rec in recs:
        assert rec["remainder"]["queries"] == rec["whole"]["queries"] == n
        assert rec == recs[0]  # metrics are all-reduced: every rank reports the same
    if exact:
        for k, v in recs[0]["whole"]["metrics"].items():
            assert recs[0]["remainder"]["metrics"][k] == pytest.approx(v, abs=1e-9), k
