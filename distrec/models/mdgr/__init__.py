"""MDGR (multi-interest embedding with dynamic graph clustering) and its GRU4Rec baseline."""

from __future__ import annotations

from typing import Any

import torch

from distrec.data.schema import Manifest
from distrec.models.mdgr.config import MDGRConfig
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Manifest, device: torch.device) -> torch.nn.Module:
    from distrec.models.mdgr.gru4rec import GRU4Rec
    from distrec.models.mdgr.model import MDGR

    m: MDGRConfig = cfg.model
    if m.variant == "gru4rec":
        return GRU4Rec(m, manifest.num_items, device)
    if m.variant != "mdgr":
        raise ValueError(f"model.variant: {m.variant!r} is not one of mdgr, gru4rec")
    return MDGR(m, manifest.num_items, device)


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> Any:
    from distrec.models.mdgr.data import build_mdgr_data

    return build_mdgr_data(cfg, bundle_dir, rank, world_size)


SPEC = ModelSpec(name="mdgr", config_cls=MDGRConfig, build_model=build_model, build_data=build_data)
