"""Every model's training batches are the same whether built inline (``data.prefetch=0``), in a
prefetch thread (``num_workers=0``) or in a forked worker process (``num_workers=1``); a resumed
epoch builds no earlier payload (counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from distrec.config import load_config
from distrec.data.payloads import PayloadTraining
from distrec.models.api import Batch
from distrec.models.registry import get_spec
from tests.helpers.bundles import write_tiny_bundle
from tests.unit.models.dismir.seq_bundle import write_seq_bundle

CASES = {
    "mf": ("graph", "configs/tiny/mf.yaml", []),
    "lightgcn": ("graph", "configs/lightgcn/synth.yaml", ["model.dim=8"]),
    "cigf": ("graph", "configs/cigf/synthetic.yaml", ["model.embedding_dim=4", "graph.mode=full"]),
    "cigf-sampled": ("graph", "configs/cigf/synthetic.yaml",
                     ["model.embedding_dim=4", "graph.fanout=[2]", "graph.layers=2"]),
    "igrec": ("graph", "configs/igrec/synthetic_groups.yaml", ["model.dim=8"]),
    "igrec-sampled": ("graph", "configs/igrec/synthetic_groups.yaml",
                      ["model.dim=8", "graph.mode=sampled", "graph.fanout=[2]", "graph.layers=1"]),
    "dismir": ("seq", "configs/dismir/gowalla.yaml", ["model.max_len=6"]),
    "mdgr": ("seq", "configs/mdgr/beauty.yaml", ["model.max_len=6"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("payloads")
    graph = write_tiny_bundle(
        root / "g", users=120, items=60, per_user=8, behaviors=("view", "buy"), groups=12
    )
    return {"graph": graph, "seq": write_seq_bundle(root / "s", users=120)}


def _data(case: str, bundle: Path, prefetch: int, workers: int) -> Any:
    kind, config, extra = CASES[case]
    model = case.split("-")[0]
    overrides = [f"data.bundle={bundle}", "data.batch_size=32", *extra]
    cfg = load_config(model, config, overrides)
    data = get_spec(model).build_data(cfg, str(bundle), 0, 1)
    assert isinstance(data, PayloadTraining), model
    data.init_prefetch(prefetch, workers)  # what build_session does with data.prefetch/num_workers
    return data


def _flat(b: Batch) -> list[torch.Tensor]:
    out = [torch.tensor(b.size)]
    for name in sorted(b.sparse):
        kjt = b.sparse[name]
        out += [kjt.values(), kjt.lengths()]
    out += [torch.as_tensor(b.dense[k]) for k in sorted(b.dense)]
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_worker_process_and_thread_build_the_inline_batches(
    case: str, bundles: dict[str, Path]
) -> None:
    bundle = bundles[CASES[case][0]]
    runs = {}
    for prefetch, workers in ((0, 0), (2, 0), (2, 1)):
        data = _data(case, bundle, prefetch, workers)
        runs[(prefetch, workers)] = [
            [_flat(b) for b in data.train_batches(epoch)] for epoch in (0, 1)
        ]
        assert data.built[1][2] == data.num_train_steps(1) > 0
    ref = runs[(0, 0)]
    for key, got in runs.items():
        assert len(got[0]) == len(ref[0]) and len(got[1]) == len(ref[1]), key
        for e in (0, 1):
            for a, b in zip(got[e], ref[e], strict=True):
                assert len(a) == len(b)
                for x, y in zip(a, b, strict=True):
                    torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["igrec", "dismir", "mdgr"])
def test_resume_builds_no_earlier_payload(case: str, bundles: dict[str, Path]) -> None:
    whole = _data(case, bundles[CASES[case][0]], 0, 0)
    ref = [_flat(b) for b in whole.train_batches(0)]
    start = len(ref) // 2
    data = _data(case, bundles[CASES[case][0]], 2, 1)
    got = [_flat(b) for b in data.train_batches(0, start_step=start)]
    assert data.built[0] == [start, len(ref) - 1, len(ref) - start]
    for a, b in zip(got, ref[start:], strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
