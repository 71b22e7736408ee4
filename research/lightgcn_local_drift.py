"""Probe: LightGCN owned full mode, KJT lookup vs ``model.local_shards`` at W = 1 / 2 / 3 on the
tiny test bundle (tests/helpers/graph_worker.py, 20 SGD steps). Prints each run's max relative
loss difference to the 1-rank KJT run and the max abs difference of the tables after step 1.

    .venv/bin/python research/lightgcn_local_drift.py [extra overrides ...]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.distributed.test_partitioned_models import COMMON, MODELS  # noqa: E402
from tests.helpers.bundles import write_tiny_bundle  # noqa: E402
from tests.helpers.torchrun import torchrun  # noqa: E402

WORKER = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "graph_worker.py"


def main(extra: list[str]) -> None:
    shape, model_over = MODELS["lightgcn"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = write_tiny_bundle(root / "bundle", **shape)  # type: ignore[arg-type]
        runs = {}
        for local in ("false", "true"):
            for world in (1, 2, 3):
                out = root / f"{local}{world}.pt"
                over = [f"data.bundle={bundle}", f"run.dir={root / f'r{local}{world}'}",
                        *COMMON, *model_over, f"model.local_shards={local}", *extra]  # fmt: skip
                torchrun(WORKER, ["lightgcn", str(out), "20", *over], world, 29850 + world)
                runs[(local, world)] = torch.load(out)
        ref = runs[("false", 1)]
        l1 = torch.tensor(ref["losses"], dtype=torch.float64)
        for key, got in runs.items():
            lw = torch.tensor(got["losses"], dtype=torch.float64)
            rel = ((lw - l1).abs() / l1.abs()).max().item()
            tab = max((got["tables1"][k] - ref["tables1"][k]).abs().max().item()
                      for k in ref["tables1"])  # fmt: skip
            print(
                f"local_shards={key[0]} W={key[1]}: loss rel diff {rel:.2e}, "
                f"tables after step 1 max abs diff {tab:.2e}, halo {got['halo_rows']}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
