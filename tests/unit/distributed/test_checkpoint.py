"""Checkpoint round trip of the dense optimizer's lazy state (single process, real DCP files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from distrec.distributed.checkpoint import META, _state, load_checkpoint


def _model_and_optimizer(name: str) -> tuple[torch.nn.Module, CombinedOptimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    make = {
        "adam": lambda ps: torch.optim.Adam(list(ps), lr=0.05, weight_decay=0.01),
        "adagrad": lambda ps: torch.optim.Adagrad(list(ps), lr=0.05),
    }[name]
    wrapped = KeyedOptimizerWrapper(dict(model.named_parameters()), make)
    return model, CombinedOptimizer([("dense", wrapped)])


def _train(model: torch.nn.Module, opt: CombinedOptimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("name", ["adam", "adagrad"])
def test_resumed_dense_optimizer_continues_exactly(tmp_path: Path, name: str) -> None:
    ref_model, ref_opt = _model_and_optimizer(name)
    _train(ref_model, ref_opt, 4, seed=1)
    dcp.save(_state(ref_model, ref_opt), checkpoint_id=str(tmp_path))
    (tmp_path / META).write_text(json.dumps({"step": 4}))

    # a fresh process's optimizer has no state yet: the load must still restore the moments
    model, opt = _model_and_optimizer(name)
    assert load_checkpoint(tmp_path, model, opt) == {"step": 4}
    saved = ref_opt.state_dict()["state"]
    loaded = opt.state_dict()["state"]
    assert set(loaded) == set(saved)
    for key, tensors in saved.items():
        for field, value in tensors.items():
            assert torch.equal(torch.as_tensor(loaded[key][field]), torch.as_tensor(value)), field

    _train(ref_model, ref_opt, 3, seed=2)
    _train(model, opt, 3, seed=2)
    for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
