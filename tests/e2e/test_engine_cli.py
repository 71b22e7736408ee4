"""The CLI end to end on a tiny bundle: 2-rank training, ``evaluate`` (plain python, world of one)
and ``recommend`` (2 ranks); the metrics recomputed from the export equal ``evaluate``'s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from distrec.data.bundle import Bundle
from distrec.metrics.ranking import ranking_metrics
from tests.distributed.launch import metrics, run, torchrun_cmd, train
from tests.helpers.bundles import write_tiny_bundle


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    bundle = write_tiny_bundle(root / "b", users=150, items=90, per_user=12)
    run_dir = root / "run"
    train(bundle, run_dir, 2, 29520, "train.epochs=2", "train.pipeline=false")
    return bundle, run_dir


def test_run_dir_layout(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "logs" / "rank0.log").exists() and (run_dir / "logs" / "rank1.log").exists()
    ck = run_dir / "checkpoints"
    for ptr in ("latest", "best"):
        assert (ck / (ck / ptr).read_text().strip() / "meta.json").exists()
    m = metrics(run_dir)
    assert m["world_size"] == 2 and len(m["valid"]) == 2 and "test" in m


def test_evaluate_equals_metrics_from_recommend_export(trained: tuple[Path, Path]) -> None:
    bundle, run_dir = trained
    ev = json.loads(
        run(
            [sys.executable, "-m", "distrec.evaluate", "--run", str(run_dir), "--split", "test"]
        ).stdout
    )
    # evaluate at world 1 reproduces what the 2-rank training run measured on its best checkpoint
    for k, v in metrics(run_dir)["test"].items():
        assert ev[k] == pytest.approx(v, abs=1e-6), k

    out = run_dir / "top.parquet"
    k = 10
    run(
        torchrun_cmd(
            "distrec.recommend",
            ["--run-dir", str(run_dir), "--split", "test", "--k", str(k), "--out", str(out)],
            2,
            29522,
        )
    )
    top = pq.read_table(out).to_pandas()
    assert list(top.columns) == ["user", "rank", "item", "score"]
    b = Bundle(bundle)
    uidx = {r: i for i, r in enumerate(b.raw_ids("users"))}
    iidx = {r: i for i, r in enumerate(b.raw_ids("items"))}
    test = b.interactions("test", b.manifest.target_behavior)
    targets: dict[int, set[int]] = {}
    for u, i in zip(test["user"], test["item"]):
        targets.setdefault(int(u), set()).add(int(i))
    users = sorted(targets)
    assert set(top["user"].map(uidx)) == set(users)
    lists = np.full((len(users), k), -1, dtype=np.int64)
    row = {u: j for j, u in enumerate(users)}
    for u, r, i in zip(top["user"], top["rank"], top["item"]):
        lists[row[uidx[u]], r - 1] = iidx[i]
    # ranks are 1..k and scores non-increasing within each user
    assert (
        top.groupby("user")["score"].apply(lambda s: bool(np.all(np.diff(s.to_numpy()) <= 1e-7)))
    ).all()
    # no training positive is recommended
    train_pos = b.interactions("train", b.manifest.target_behavior)
    seen = set(zip(train_pos["user"].tolist(), train_pos["item"].tolist()))
    assert not any((u, int(i)) in seen for u, li in zip(users, lists) for i in li if i >= 0)
    re = ranking_metrics(lists, [targets[u] for u in users], [5, 10])
    for name, vals in re.items():
        assert float(vals.mean()) == pytest.approx(ev[name], abs=1e-6), name
