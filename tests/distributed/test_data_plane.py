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
import shutil
from collections import Counter
from pathlib import Path

import pytest

from distrec.data.bundle import Bundle
from distrec.data.interactions import InteractionData
from tests.helpers.bundles import write_tiny_bundle
from tests.helpers.torchrun import torchrun
from tests.unit.models.mdgr.test_mdgr_distributed import TINY_MDGR

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


# ------------------------------------------------------------ DisMIR / MDGR: streamed sequences
# (model, fixture, config, overrides): the grouped bundles have 16 / 8 row groups, dealt to 4 shards
SEQ_CASES = [
    ("dismir", "grouped_seq_bundle", "configs/dismir/gowalla.yaml",
     ["data.batch_size=16", "data.eval_batch_size=4", "data.partitions=4", "model.dim=8",
      "model.max_len=6"]),
    ("mdgr", "grouped_chunks_bundle", "configs/mdgr/ml100k.yaml",
     ["data.partitions=4", *TINY_MDGR]),
]  # fmt: skip
SEQ_TABLE = {"dismir": ("sequences", None), "mdgr": ("eval/chunks", "train")}


@pytest.fixture(scope="module")
def grouped_seq_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unit.data.seq_bundles import write_grouped_seq_bundle

    return write_grouped_seq_bundle(tmp_path_factory.mktemp("dpgs") / "b")


@pytest.fixture(scope="module")
def grouped_chunks_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unit.data.seq_bundles import write_grouped_chunks_bundle

    return write_grouped_chunks_bundle(tmp_path_factory.mktemp("dpgc") / "b")


@pytest.fixture(scope="module")
def seq_ranks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict]:
    out = tmp_path_factory.mktemp("dp_seq")
    cases = ["@".join([m, str(request.getfixturevalue(f)), c, *o]) for m, f, c, o in SEQ_CASES]
    torchrun(WORKER, ["seq", str(out), *cases], 2, 29690)
    return [json.loads((out / f"seq{r}.json").read_text()) for r in range(2)]


def _samples(model: str, bundle: Path) -> Counter[tuple[int, int]]:
    table, split = SEQ_TABLE[model]
    rows = Bundle(bundle).table(table, split=split).to_pylist()
    if model == "dismir":  # position t >= 1 of each sequence
        return Counter((r, t) for r, x in enumerate(rows) for t in range(1, len(x["items"])))
    n = [min(len(x["targets"]), len(x["candidates"])) for x in rows]  # (chunk, j)
    return Counter((r, j) for r, k in enumerate(n) for j in range(k))


@pytest.mark.parametrize("case", SEQ_CASES, ids=[c[0] for c in SEQ_CASES])
def test_sequence_ranks_read_their_row_groups_and_every_sample_once(
    request: pytest.FixtureRequest, seq_ranks: list[dict], case: tuple
) -> None:
    model, fixture = case[0], case[1]
    bundle = request.getfixturevalue(fixture)
    recs = [r[model] for r in seq_ranks]
    table = SEQ_TABLE[model][0]
    # rows read: only own shards' row groups, each window once per epoch; the shards tile the table
    for rec in recs:
        assert {r[0] for r in rec["reads"]} <= set(rec["shards"])
        own = sum(rec["shard_rows"].values())
        distinct = {(r[0], r[1], r[2]): r[3] for r in rec["reads"] if r[1] == 0}
        assert sum(distinct.values()) == own
        counted = own if model == "mdgr" else 0  # chunk counts are exact after one own read
        # two epochs of window loads (+ the chunk count): nothing else read from the table
        assert rec["rows_read"][table] - counted == sum(r[3] for r in rec["reads"]) == 2 * own
    assert sum(sum(rec["shard_rows"].values()) for rec in recs) == recs[0]["table_rows"]
    # same steps and rank batch sizes; every sample once per epoch before the fill
    assert recs[0]["steps"] == recs[1]["steps"] > 0
    assert recs[0]["sizes"] == recs[1]["sizes"] and len(set(recs[0]["sizes"])) == 1
    want = _samples(model, bundle)
    for epoch in (0, 1):
        got = Counter(
            (r, t) for rec in recs for step in rec["epochs"][epoch] for r, t, f in step if not f
        )
        assert got == want, epoch
    assert recs[0]["epochs"][0] != recs[0]["epochs"][1]  # epochs shuffle differently
    # eval: equal step counts, every valid query once over the ranks
    assert len(recs[0]["eval"]) == len(recs[1]["eval"]) > 0
    name = "eval/user_holdout" if model == "dismir" else "eval/chunks"
    users = Bundle(bundle).table(name, ["user"], split="valid").column("user").to_pylist()
    assert sorted(u for rec in recs for step in rec["eval"] for u in step) == sorted(users)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", SEQ_CASES, ids=[c[0] for c in SEQ_CASES])
def test_sequence_kill_and_resume_matches_uninterrupted(
    request: pytest.FixtureRequest, tmp_path: Path, case: tuple
) -> None:
    """2 ranks SIGKILLed after a mid-epoch checkpoint, resumed: the remaining losses and final
    metrics equal an uninterrupted run's, and no batch before the saved position is built."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.distributed.launch import (
        kill_after_first_checkpoint,
        losses,
        metrics,
        run,
        torchrun_cmd,
    )

    model, fixture, config, over = case
    port = 29692 + 3 * SEQ_CASES.index(case)
    bundle = request.getfixturevalue(fixture)
    args = [model, "--config", config, f"data.bundle={bundle}", *over, "train.epochs=2",
            "run.checkpoint_every=3", "run.keep_checkpoints=5", "metrics.enabled=false"]  # fmt: skip
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    with ThreadPoolExecutor(2) as pool:  # both at once: start-up dominates
        job = pool.submit(run, torchrun_cmd("distrec.train", [*args, f"run.dir={ref}"], 2, port))
        kill_after_first_checkpoint(
            torchrun_cmd("distrec.train", [*args, f"run.dir={killed}"], 2, port + 1),
            killed,
            timeout_s=240,
        )
        job.result()
    latest = killed / "checkpoints" / (killed / "checkpoints" / "latest").read_text().strip()
    ck = json.loads((latest / "meta.json").read_text())
    shutil.rmtree(killed / "data_stats", ignore_errors=True)
    run(torchrun_cmd("distrec.train", [*args, f"run.dir={killed}", "--resume"], 2, port + 2))
    steps = json.loads((ref / "data_stats" / "rank0.json").read_text())["steps"]
    for r in range(2):
        stats = json.loads((killed / "data_stats" / f"rank{r}.json").read_text())
        built = {int(e): c for e, c in stats["built"].items()}
        assert min(built) == ck["epoch"]
        if ck["step_in_epoch"]:
            assert built[ck["epoch"]] == [
                ck["step_in_epoch"],
                steps - 1,
                steps - ck["step_in_epoch"],
            ]
    got, want = metrics(killed), metrics(ref)
    assert got["global_step"] == want["global_step"]
    for k, v in want["test"].items():
        assert got["test"][k] == pytest.approx(v, abs=1e-5), k
    tail = [r for r in losses(killed) if r["step"] > ck["global_step"]]
    refl = {r["step"]: r["loss"] for r in losses(ref)}
    assert tail and all(
        r["loss"] == pytest.approx(refl[r["step"]], rel=1e-4, abs=1e-6) for r in tail
    )
