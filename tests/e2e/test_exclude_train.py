"""``eval.exclude_train``: true masks each user's training positives from the ranking, false
ranks them too (checked on ``distrec.recommend``'s lists and on ``distrec.evaluate``'s metrics of
one trained run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from distrec.data.bundle import Bundle
from tests.helpers.bundles import write_tiny_bundle

CONFIG = "configs/tiny/mf.yaml"


def _run(args: list[str]) -> str:
    p = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{args}:\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("excl")
    bundle = write_tiny_bundle(root / "b", users=60, items=40, per_user=12)
    run_dir = root / "run"
    _run(
        ["distrec.train", "mf", "--config", CONFIG, f"data.bundle={bundle}",
         f"run.dir={run_dir}", "train.epochs=3", "train.pipeline=false"]
    )  # fmt: skip
    return bundle, run_dir


def _train_positives(bundle: Path) -> set[tuple[str, str]]:
    b = Bundle(str(bundle))
    t = b.interactions("train", b.manifest.target_behavior)
    users, items = b.raw_ids("users"), b.raw_ids("items")
    return {(str(users[u]), str(items[i])) for u, i in zip(t["user"], t["item"])}


@pytest.mark.parametrize("exclude", [True, False])
def test_recommend_lists(run: tuple[Path, Path], exclude: bool) -> None:
    bundle, run_dir = run
    out = run_dir / f"top_{exclude}.parquet"
    _run(
        ["distrec.recommend", "--run-dir", str(run_dir), "--split", "test", "--k", "10",
         "--out", str(out), f"eval.exclude_train={str(exclude).lower()}"]
    )  # fmt: skip
    top = pd.read_parquet(out)
    seen = _train_positives(bundle)
    hits = sum((u, i) in seen for u, i in zip(top["user"].astype(str), top["item"].astype(str)))
    if exclude:
        assert hits == 0
    else:
        # 12 train items of 40 per user, trained on them: unmasked, they crowd the top 10
        assert hits > len(top) // 4, (hits, len(top))


def test_evaluate_metrics_differ(run: tuple[Path, Path]) -> None:
    _, run_dir = run
    res = {
        flag: json.loads(
            _run(
                [
                    "distrec.evaluate",
                    "--run",
                    str(run_dir),
                    "--split",
                    "test",
                    f"eval.exclude_train={flag}",
                ]
            )  # fmt: skip
        )
        for flag in ("true", "false")
    }
    # the run's own test metrics are the masked ones
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert res["true"]["recall@10"] == pytest.approx(trained["recall@10"], abs=1e-6)
    # seen items take top slots when unmasked, so fewer held-out items make the top 10
    assert res["false"]["recall@10"] < res["true"]["recall@10"]
