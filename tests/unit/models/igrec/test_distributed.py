"""A 2-rank sharded IGRec run (torchrun, gloo) matches a 1-rank run step for step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.torchrun import run_session_worker


def _run(world: int, port: int, out: Path, bundle: Path, tmp: Path, extra: list[str]) -> dict:
    overrides = [
        f"data.bundle={bundle}",
        "data.batch_size=64",
        "data.eval_batch_size=32",
        "model.dim=8",
        "graph.layers=2",
        "metrics.enabled=false",
        f"run.dir={tmp / f'run{world}'}",
        *extra,
    ]
    return run_session_worker("igrec", world, port, out, "cache", overrides)


_FUSED_SGD = ["train.sparse_optimizer=sgd", "train.sparse_lr=0.5", "train.dense_optimizer=sgd",
              "train.lr=0.5", "sharding.default=row_wise"]  # fmt: skip


@pytest.mark.parametrize(
    ("port", "extra"),
    [
        # fused SGD on row-wise user/item tables, table-wise groups; dense SGD for the rest
        (29650, [*_FUSED_SGD, "sharding.tables={group: table_wise}"]),
        # the MaFengWo set-up: dense kernel, everything with Adam
        (29652, ["train.sparse_optimizer=adam", "sharding.compute_kernel=dense", "train.lr=0.05"]),
        # sampled mode with capped fanout and member cap: each rank samples its own slice; a
        # node's draws depend only on (step, node), so 2 ranks see the 1-rank neighbourhoods
        (29654, [*_FUSED_SGD, "graph.mode=sampled", "graph.fanout=[3,2]",
                 "graph.fanout_over=union", "model.member_cap=2", "graph.partition=replicated"]),
    ],
    ids=["fused-sgd", "dense-adam", "sampled-capped"],
)  # fmt: skip
def test_two_ranks_match_one_rank(tmp_path: Path, port: int, extra: list[str]) -> None:
    from tests.helpers.bundles import write_tiny_bundle

    bundle = write_tiny_bundle(tmp_path / "b", users=60, items=40, groups=10)
    one = _run(1, port, tmp_path / "one.pt", bundle, tmp_path, extra)
    two = _run(2, port + 1, tmp_path / "two.pt", bundle, tmp_path, extra)
    assert len(one["losses"]) == len(two["losses"]) > 2
    torch.testing.assert_close(
        torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-5
    )
    assert one["losses"][-1] != one["losses"][0]  # the steps did train
    torch.testing.assert_close(two["user"], one["user"], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(two["group"], one["group"], rtol=1e-3, atol=1e-5)
