"""``python -m distrec.sweep`` for real on a tiny bundle: one engine run per grid point, one JSON
line each; a point run later in the same process reproduces a fresh ``distrec.train`` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.bundles import write_tiny_bundle

CONFIG = "configs/tiny/mf.yaml"


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("sweep")
    bundle = write_tiny_bundle(root / "b", users=60, items=40, per_user=10)
    out = root / "sweep.jsonl"
    base = [f"data.bundle={bundle}", "train.pipeline=false"]
    _run(
        ["distrec.sweep", "mf", "--config", CONFIG, "--out", str(out), "--grid",
         "train.sparse_lr=0.2,0.05", "--grid", "train.epochs=1,2", *base]
    )  # fmt: skip
    return root, out, base


def test_one_line_per_grid_point(swept: tuple[Path, Path, list[str]]) -> None:
    _, out, _ = swept
    lines = _lines(out)
    assert [ln["overrides"] for ln in lines] == [
        {"train.sparse_lr": lr, "train.epochs": e} for lr in (0.2, 0.05) for e in (1, 2)
    ]
    for ln in lines:
        run = Path(ln["run_dir"])
        m = json.loads((run / "metrics.json").read_text())
        assert ln["test"] == m["test"] and ln["best_valid"] == m["best_valid"]
        assert ln["epochs_done"] == ln["overrides"]["train.epochs"] == m["epochs_done"]
        assert ln["valid"][ln["select_metric"]] == ln["best_valid"]
        assert ln["wall_s"] > 0
        cfg = (run / "config.yaml").read_text()
        assert f"sparse_lr: {ln['overrides']['train.sparse_lr']}" in cfg
    # the learning rate reaches the runs: different rates, different results
    assert lines[1]["test"] != lines[3]["test"]


def test_point_equals_fresh_train_process(swept: tuple[Path, Path, list[str]]) -> None:
    root, out, base = swept
    last = _lines(out)[-1]  # the 4th run of the sweep process
    run_dir = root / "fresh"
    _run(
        ["distrec.train", "mf", "--config", CONFIG, *base, f"run.dir={run_dir}",
         *(f"{k}={v}" for k, v in last["overrides"].items())]
    )  # fmt: skip
    fresh = json.loads((run_dir / "metrics.json").read_text())
    assert fresh["test"] == pytest.approx(last["test"], abs=1e-6)
    assert fresh["best_valid"] == pytest.approx(last["best_valid"], abs=1e-6)


def test_rerun_skips_done_points_and_points_file(swept: tuple[Path, Path, list[str]]) -> None:
    root, out, base = swept
    points = root / "points.yaml"
    points.write_text("- {train.sparse_lr: 0.2, train.epochs: 1}\n- {train.sparse_lr: 0.1}\n")
    _run(
        ["distrec.sweep", "mf", "--config", CONFIG, "--out", str(out), "--points", str(points),
         "--grid", "train.epochs=1", *base]
    )  # fmt: skip
    lines = _lines(out)
    assert len(lines) == 5  # the first point was done already
    assert lines[-1]["overrides"] == {"train.sparse_lr": 0.1, "train.epochs": 1}


def test_bad_override_is_one_line_exit_2(tmp_path: Path) -> None:
    p = _run(
        ["distrec.sweep", "mf", "--config", CONFIG, "--out", str(tmp_path / "x.jsonl"),
         "--grid", "train.nope=1,2"],
        check=False,
    )  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: point 0") and "train.nope" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "x.jsonl").exists()
