"""The single-process search tool and the sparse user-group pooling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distrec.models.igrec.fusion import fuse_users, user_group_pool
from distrec.models.igrec.standalone import main, parse_overrides


def test_sparse_pool_equals_gathered_mean() -> None:
    torch.manual_seed(0)
    e_u, e_star = torch.randn(6, 4), torch.randn(3, 4)
    edge_user = torch.tensor([0, 0, 1, 2, 2, 2, 5])
    edge_group = torch.tensor([0, 1, 1, 0, 1, 2, 2])
    expected = e_u.clone()
    for u in range(6):
        gs = edge_group[edge_user == u]
        if len(gs):
            expected[u] = (e_u[u] + e_star[gs].mean(0)) / 2
    pool = user_group_pool(edge_user, edge_group, 6, 3)
    torch.testing.assert_close(fuse_users(e_u, e_star, edge_user, edge_group, pool), expected)
    torch.testing.assert_close(fuse_users(e_u, e_star, edge_user, edge_group), expected)


def test_overrides_are_typed_and_checked() -> None:
    cfg = parse_overrides(["model.eta1=0.2", "model.hard=true", "model.interest_module=fc1"])
    assert (cfg.eta1, cfg.hard, cfg.interest_module) == (0.2, True, "fc1")
    with pytest.raises(ValueError, match="model.nope"):
        parse_overrides(["model.nope=1"])
    with pytest.raises(ValueError, match="model.selection"):
        parse_overrides(["model.selection=max"])


def test_standalone_trains_and_reports_both_tasks(tmp_path: Path) -> None:
    from tests.helpers.bundles import write_tiny_bundle

    bundle = write_tiny_bundle(tmp_path / "b", users=60, items=40, groups=10)
    out = tmp_path / "r.json"
    res = main(
        [
            "--bundle", str(bundle), "--epochs", "2", "--eval-every", "1", "--batch-size", "64",
            "--layers", "2", "--json-out", str(out), "model.dim=8",
        ]
    )  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["best"] == json.loads(json.dumps(res["best"]))
    assert [c["epoch"] for c in saved["curve"]] == [1, 2]
    for task in ("user", "group"):
        best = saved["best"][task]
        assert best["epoch"] in (1, 2)
        # The test metrics kept are those of the epoch with the best validation NDCG@10.
        curve = {c["epoch"]: c[f"{task}/ndcg@10"] for c in saved["curve"]}
        assert best["valid"] == max(curve.values())
        assert 0.0 <= best["test"][f"{task}/recall@10"] <= 1.0
