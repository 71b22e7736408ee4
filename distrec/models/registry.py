"""Model registry: a literal dict from model name to the module that defines its ``SPEC``.

Modules are imported on demand so that a command touching one model does not import all of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODELS: dict[str, str] = {
    "popularity": "distrec.models.popularity",
    "mf": "distrec.models.mf",
    "lightgcn": "distrec.models.lightgcn",
    "cigf": "distrec.models.cigf",
    "igrec": "distrec.models.igrec",
    "dismir": "distrec.models.dismir",
    "mdgr": "distrec.models.mdgr",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the engine needs from a model package.

    ``build_model(cfg: Config, manifest: Manifest, device: torch.device) -> RecModel``
    ``build_data(cfg: Config, bundle_dir: str, rank: int, world_size: int) -> TaskData``
    ``trainable``: False for models with nothing to optimise (Popularity): the trainer only
    fits/evaluates them.
    """

    name: str
    config_cls: type
    build_model: Callable[..., Any]
    build_data: Callable[..., Any]
    trainable: bool = True


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UnknownModelError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}"
        )
    module = importlib.import_module(MODELS[name])
    spec = module.SPEC
    assert isinstance(spec, ModelSpec), f"{MODELS[name]}.SPEC must be a ModelSpec"
    return spec
