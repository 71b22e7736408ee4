"""Partitioned full propagation on real gloo ranks equals one process (values and gradients).

Core level (tests/helpers/halo_worker.py): LightGCN's flat user+item matrix with the batch rows
gathered from their owners, and CIGF's K node-space matrices sharing one halo, at W = 2 and 3.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.torchrun import torchrun

WORKER = Path(__file__).parents[1] / "helpers" / "halo_worker.py"


@pytest.mark.parametrize("world", [2, 3])
def test_partitioned_propagation_equals_one_process(world: int, tmp_path: Path) -> None:
    torchrun(WORKER, [str(tmp_path)], world, 29620 + world)
    halos, push = [], []
    for r in range(world):
        res = torch.load(tmp_path / f"rank{r}.pt")
        for k in ("lgcn_value", "lgcn_rows", "lgcn_grad", "multi_value", "multi_grad",
                  "push_value", "push_rows", "push_ego", "push_grad"):  # fmt: skip
            assert res[k] < 1e-5, (r, k, res[k])
        halos.append(res["halo"])
        push.append(res["push_halo"])
    # each rank fetched only part of the graph's columns
    assert min(halos) < 23 + 17
    assert min(push) < 23 + 17
