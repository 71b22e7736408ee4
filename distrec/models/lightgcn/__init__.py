"""LightGCN baseline (full and sampled graph modes): ``SPEC`` for the registry."""

from __future__ import annotations

from typing import Any

import torch

from distrec.models.lightgcn.model import LightGCN, LightGCNConfig
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Any, device: torch.device) -> LightGCN:
    """Reads the graph from ``cfg.data.bundle`` (the model keeps it for full propagation)."""
    from distrec.data.bundle import Bundle
    from distrec.graph.adjacency import bipartite_from_bundle

    graph = bipartite_from_bundle(
        Bundle(cfg.data.bundle), cfg.model.behavior or None, renormalize=cfg.model.renormalize
    )
    return LightGCN(
        cfg.model,
        graph,
        layers=cfg.graph.layers,
        l2=cfg.train.l2,
        device=device,
        partition=cfg.graph.partition,
    )


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> Any:
    from distrec.data.bundle import Bundle
    from distrec.graph.adjacency import bipartite_from_bundle
    from distrec.models.lightgcn.data import LightGCNData

    bundle = Bundle(bundle_dir)
    behavior = cfg.model.behavior or None
    graph = None
    if cfg.graph.mode == "sampled":
        graph = bipartite_from_bundle(bundle, behavior, renormalize=cfg.model.renormalize)
    return LightGCNData.from_config(
        cfg,
        bundle,  # type: ignore[arg-type]
        rank,
        world_size,
        mode=cfg.graph.mode,
        layers=cfg.graph.layers,
        fanout=cfg.graph.fanout,
        graph=graph,
        behaviors=[behavior] if behavior else None,
    )


SPEC = ModelSpec(
    name="lightgcn", config_cls=LightGCNConfig, build_model=build_model, build_data=build_data
)

__all__ = ["LightGCN", "LightGCNConfig", "SPEC"]
