"""DisMIR (paper: ../shared/papers/dismir.md): capsule multi-interest extractor, interest
attention (eq. 5) and the item-partition contrastive task (Theorem 4), with the ablations of
Table 3 and the ComiRec-SA plug-in backbone of Table 5 selected by config."""

from __future__ import annotations

from typing import Any

import torch

from distrec.models.common.sequence_data import SequenceData, build_sequence_data
from distrec.models.dismir.config import DisMIRConfig
from distrec.models.dismir.model import DisMIR
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Any, device: torch.device | None = None) -> DisMIR:
    """The DisMIR model for ``manifest.num_items`` items (tables on ``device``, e.g. meta)."""
    return DisMIR(cfg.model, manifest.num_items, device=device, l2=cfg.train.l2)


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> SequenceData:
    """Sequence samples with the partition features when ``model.partition_weight > 0``."""
    m: DisMIRConfig = cfg.model
    m.validate()
    return build_sequence_data(
        cfg,
        bundle_dir,
        rank,
        world_size,
        num_candidates=m.hard_candidates,
        negative_pool=m.negative_pool,
        cooc_negatives=m.partition_negatives if m.partition_weight > 0 else 0,
        noise_dim=m.num_interests if m.backbone == "capsule" else 0,
        exclude_history=m.exclude_history,
    )


SPEC = ModelSpec(
    name="dismir", config_cls=DisMIRConfig, build_model=build_model, build_data=build_data
)

__all__ = ["SPEC", "DisMIR", "DisMIRConfig", "build_data", "build_model"]
