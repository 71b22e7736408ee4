"""MF-BPR baseline: ``SPEC`` for the registry."""

from __future__ import annotations

from typing import Any

import torch

from distrec.models.mf.model import MF, MFConfig
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Any, device: torch.device) -> MF:
    return MF(
        cfg.model,
        num_users=manifest.num_users,
        num_items=manifest.num_items,
        l2=cfg.train.l2,
        num_negatives=cfg.data.num_negatives,
        device=device,
    )


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> Any:
    from distrec.data.interactions import InteractionData

    return InteractionData.from_config(cfg, bundle_dir, rank, world_size)


SPEC = ModelSpec(name="mf", config_cls=MFConfig, build_model=build_model, build_data=build_data)

__all__ = ["MF", "MFConfig", "SPEC"]
