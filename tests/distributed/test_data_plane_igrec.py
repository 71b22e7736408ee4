"""IGRec's rank-partitioned data plane on real gloo ranks (torchrun subprocesses).

* each rank reads only its shards' rows of ``ui.<target>`` (user-item pairs) and of
  ``group_item`` (group-item pairs), and the model's owned-graph reader only its node ranges'
  rows of ``ui`` / ``iu`` / ``user_group`` / ``group_user`` (rows read are counted per table);
* an epoch's user and group pairs over all ranks are every train pair exactly once before the
  wrap-around fill, with the same step count on every rank; global batch t at 2 ranks is the
  1-rank one;
* every eval query is evaluated on exactly one rank, its owner, with the same step count;
* a 2-rank run killed (SIGKILL) after a mid-epoch checkpoint and resumed builds no earlier batch
  (counted) and ends with the uninterrupted run's loss curve and metrics.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from distrec.data.bundle import Bundle
from distrec.models.igrec.data import IGRecData
from tests.distributed.launch import kill_after_first_checkpoint, losses, metrics, run, torchrun_cmd
from tests.helpers.bundles import write_tiny_bundle
from tests.helpers.torchrun import torchrun

WORKER = Path(__file__).with_name("data_plane_igrec_worker.py")
GRAPHS = ("ui.buy", "group_item")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 16 graph files on the writer's src bounds: the layout of a partitioned (format 2) bundle
    return write_tiny_bundle(
        tmp_path_factory.mktemp("dpi") / "b",
        users=200, items=120, per_user=12, groups=48, graph_parts=16,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ranks(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("dpi_out")
    torchrun(WORKER, [str(bundle), str(out)], 2, 29691)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _has_row(bundle: Path, name: str) -> np.ndarray:
    return Bundle(bundle).graph(name).degrees() > 0


@pytest.mark.parametrize(("graph", "bounds", "reads"), [
    ("ui.buy", "bounds", "reads"), ("group_item", "gbounds", "greads"),
])  # fmt: skip
def test_each_rank_reads_only_its_shards(
    bundle: Path, ranks: list[dict], graph: str, bounds: str, reads: str
) -> None:
    has_row = _has_row(bundle, graph)
    for rec in ranks:
        own = sum(int(has_row[lo:hi].sum()) for lo, hi in rec[bounds])
        assert {r[0] for r in rec[reads]} <= set(rec["shards"])
        # every window of its shards read once in the epoch: the rows of its src ranges
        distinct = {(r[0], r[1], r[2]): r[3] for r in rec[reads] if r[1] == 0}
        assert sum(distinct.values()) == own
        assert rec["train_rows_read"][f"graphs/{graph}"] == sum(r[3] for r in rec[reads])
        assert 0 < own < int(has_row.sum())
        # nothing else: no whole table (interactions, memberships) for training
        assert set(rec["train_rows_read"]) == {f"graphs/{g}" for g in GRAPHS}
    assert sum(int(has_row[lo:hi].sum()) for r in ranks for lo, hi in r[bounds]) == has_row.sum()


@pytest.mark.parametrize("key", ["epochs", "gepochs"])
def test_epoch_is_every_pair_once_before_the_fill(
    bundle: Path, ranks: list[dict], key: str
) -> None:
    graph = Bundle(bundle).graph("ui.buy" if key == "epochs" else "group_item")
    want = Counter(zip(graph.sources().tolist(), graph.indices.tolist(), strict=True))
    assert ranks[0]["steps"] == ranks[1]["steps"] > 2
    assert len(ranks[0][key][0]) == len(ranks[1][key][0]) == ranks[0]["steps"]
    sizes = [len(a) + len(b) for a, b in zip(ranks[0][key][0], ranks[1][key][0], strict=True)]
    assert len(set(sizes)) == 1  # the same global batch every step
    for epoch in (0, 1):
        got = Counter(
            (u, i) for rec in ranks for step in rec[key][epoch] for u, i, f in step if not f
        )
        assert got == want
        fill = [(u, i) for rec in ranks for step in rec[key][epoch] for u, i, f in step if f]
        assert set(fill) <= set(want)  # the fill repeats real pairs
    assert ranks[0][key][0] != ranks[0][key][1]  # epochs are shuffled differently
    assert ranks[0]["neg_shape"][1] == ranks[0]["gneg_shape"][1] == 2


def test_global_batches_do_not_depend_on_the_world_size(bundle: Path, ranks: list[dict]) -> None:
    one = IGRecData(
        str(bundle), target_behavior=0, batch_size=64, eval_batch_size=16, num_negatives=2,
        rank=0, world=1, seed=3, buffer_rows=40,
    )  # fmt: skip
    assert one.num_train_steps(0) == ranks[0]["steps"]
    assert one.gstream is not None
    for stream, key in ((one.stream, "epochs"), (one.gstream, "gepochs")):
        for t in range(one.steps):
            parts = stream.step_slices(0, t)
            ref = sorted((int(u), int(i)) for p in parts for u, i in zip(p.users, p.items))
            got = sorted((u, i) for rec in ranks for u, i, _ in rec[key][0][t])
            assert got == ref, (key, t)


def test_owned_graph_rows_are_only_the_ranks_ranges(bundle: Path, ranks: list[dict]) -> None:
    tables = {"ui.buy": "user", "iu.buy": "item", "user_group": "user", "group_user": "group"}
    for name, t in tables.items():
        has_row = _has_row(bundle, name)
        for rec in ranks:
            lo, hi = rec["ranges"][t]
            assert rec["graph_rows_read"][f"graphs/{name}"] == int(has_row[lo:hi].sum()), name
        assert sum(rec["graph_rows_read"][f"graphs/{name}"] for rec in ranks) == has_row.sum()
    for rec in ranks:
        assert set(rec["graph_rows_read"]) == {f"graphs/{n}" for n in tables}


def test_each_eval_query_is_on_its_owner_once(bundle: Path, ranks: list[dict]) -> None:
    b = Bundle(bundle)
    for task in ("user", "group"):
        for split in ("valid", "test"):
            if task == "user":
                want = np.unique(b.interactions(split, "buy")["user"])
            else:
                want = np.unique(b.table("groups/items", ["group"], split)["group"].to_numpy())
            key = f"{task}/{split}"
            assert len(ranks[0]["queries"][key]) == len(ranks[1]["queries"][key]) > 1  # steps
            got = []
            for rec in ranks:
                lo, hi = rec["ranges"][task]
                mine = [q for step in rec["queries"][key] for q in step]
                assert all(lo <= q < hi for q in mine), key
                got += mine
            assert sorted(got) == want.tolist(), key


# ---------------------------------------------------------------- kill and resume (engine)
TRAIN = ["data.batch_size=64", "data.eval_batch_size=32", "model.dim=8", "graph.layers=2",
         "graph.mode=full", "train.epochs=3", "train.eval_every=1", "metrics.enabled=false",
         "train.sparse_optimizer=sgd", "train.sparse_lr=0.5", "train.dense_optimizer=sgd",
         "train.lr=0.5", "sharding.default=row_wise", "run.checkpoint_every=10",
         "run.keep_checkpoints=3", "data.shuffle_buffer=300",
         "train.select_metric=user/ndcg@10"]  # fmt: skip


def _cmd(bundle: Path, run_dir: Path, nproc: int, port: int, *extra: str) -> list[str]:
    args = ["igrec", f"data.bundle={bundle}", f"run.dir={run_dir}", *TRAIN, *extra]
    return torchrun_cmd("distrec.train", args, nproc, port)


def test_kill_and_resume_matches_uninterrupted(bundle: Path, tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    run(_cmd(bundle, ref_dir, 2, 29693))
    kill_after_first_checkpoint(_cmd(bundle, run_dir, 2, 29695), run_dir)
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    position = json.loads((latest / "meta.json").read_text())["data"]
    assert position["step"] > 0  # a mid-epoch position
    assert {k.split(".")[0] for k in position["shards"]} == {"user", "group"}
    run(_cmd(bundle, run_dir, 2, 29697, "--resume"))
    want = metrics(ref_dir)
    for r in range(2):  # the resumed run built no batch before the saved position
        stats = json.loads((run_dir / "data_stats" / f"rank{r}.json").read_text())
        built = {int(e): c for e, c in stats["built"].items()}  # epoch -> [first, last, count]
        start = (position["epoch"], position["step"])
        assert min(built) == start[0], (start, built)
        assert built[start[0]] == [start[1], stats["steps"] - 1, stats["steps"] - start[1]]
    got = metrics(run_dir)
    assert got["global_step"] == want["global_step"]
    for k, v in want["test"].items():
        assert got["test"][k] == pytest.approx(v, abs=1e-5), k
    ref = {r["step"]: r["loss"] for r in losses(ref_dir)}
    tail = [r for r in losses(run_dir) if r["step"] > int(latest.name.split("-")[1])]
    assert tail
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in tail]),
        torch.tensor([ref[r["step"]] for r in tail]),
        rtol=1e-5,
        atol=1e-6,
    )
