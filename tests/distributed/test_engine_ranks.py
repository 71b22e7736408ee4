"""Real 2-rank gloo runs of the engine (torchrun subprocesses) against 1-rank runs.

* a 2-rank row-wise run follows the 1-rank loss curve for the same global batch;
* a 2-rank run killed (SIGKILL) after a checkpoint and resumed ends with the step count and
  metrics of the uninterrupted run, also when resumed at a different world size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.distributed.launch import (
    kill_after_first_checkpoint,
    losses,
    metrics,
    torchrun_cmd,
    train,
)
from tests.helpers.bundles import write_tiny_bundle

EXTRA = ["run.checkpoint_every=16", "run.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(
        tmp_path_factory.mktemp("eng") / "b", users=200, items=120, per_user=12
    )


@pytest.fixture(scope="module")
def reference(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Uninterrupted 2-rank row-wise run (pipelined), checkpoints every 16 steps."""
    run_dir = tmp_path_factory.mktemp("eng") / "ref2"
    train(bundle, run_dir, 2, 29510, *EXTRA)
    return run_dir


def test_two_ranks_follow_one_rank_loss_curve(
    bundle: Path, reference: Path, tmp_path: Path
) -> None:
    one = tmp_path / "ref1"
    train(bundle, one, 1, 29511, *EXTRA)
    a, b = losses(one), losses(reference)
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) > 50
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in b]),
        torch.tensor([r["loss"] for r in a]),
        rtol=1e-4,
        atol=1e-5,
    )
    # the loss goes down: the run trains
    assert sum(r["loss"] for r in a[-10:]) < sum(r["loss"] for r in a[:10])
    ma, mb = metrics(one), metrics(reference)
    assert ma["global_step"] == mb["global_step"]
    for k, v in ma["test"].items():
        assert mb["test"][k] == pytest.approx(v, abs=1e-4), k


def _kill_after_first_checkpoint(bundle: Path, run_dir: Path, port: int) -> None:
    args = ["mf", "--config", "configs/tiny/mf.yaml", f"data.bundle={bundle}",
            f"run.dir={run_dir}", *EXTRA]  # fmt: skip
    kill_after_first_checkpoint(torchrun_cmd("distrec.train", args, 2, port), run_dir)


@pytest.mark.parametrize("resume_world,port", [(2, 29512), (1, 29514)])
def test_kill_and_resume_matches_uninterrupted(
    bundle: Path, reference: Path, tmp_path: Path, resume_world: int, port: int
) -> None:
    run_dir = tmp_path / "killed"
    _kill_after_first_checkpoint(bundle, run_dir, port)
    assert not (run_dir / "metrics.json").exists() or "test" not in metrics(run_dir)
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    assert ckpts, "the killed run kept no complete checkpoint"
    # a half-written checkpoint directory is never what `latest` points to
    assert (
        run_dir
        / "checkpoints"
        / (run_dir / "checkpoints" / "latest").read_text().strip()
        / "meta.json"
    ).exists()
    shutil.rmtree(run_dir / "logs", ignore_errors=True)
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    position = json.loads((latest / "meta.json").read_text())["data"]
    train(bundle, run_dir, resume_world, port + 1, *EXTRA, "--resume")
    want = metrics(reference)
    # the resumed run built no batch before the saved data position (counted on every rank)
    for r in range(resume_world):
        stats = json.loads((run_dir / "data_stats" / f"rank{r}.json").read_text())
        built = {int(e): c for e, c in stats["built"].items()}  # epoch -> [first, last, count]
        start = (position["epoch"], position["step"])
        assert all(e >= start[0] for e in built), (start, built)
        if start[0] < want["epochs_done"]:  # the kill left steps to train
            steps = stats["steps"]
            assert built[start[0]] == [start[1], steps - 1, steps - start[1]], (start, built)
    got, want = metrics(run_dir), metrics(reference)
    assert got["global_step"] == want["global_step"]
    assert got["best_step"] == want["best_step"]
    for k, v in want["test"].items():
        assert got["test"][k] == pytest.approx(v, abs=1e-4), k
    # the resumed part of the loss curve equals the uninterrupted one
    ref = {r["step"]: r["loss"] for r in losses(reference)}
    tail = [r for r in losses(run_dir) if r["step"] > int(ckpts[0].name.split("-")[1])]
    assert tail
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in tail]),
        torch.tensor([ref[r["step"]] for r in tail]),
        rtol=1e-4,
        atol=1e-5,
    )
