"""LightGCN baseline (full and sampled graph modes): ``SPEC`` for the registry."""

from __future__ import annotations

from typing import Any

import torch

from distrec.models.lightgcn.model import LightGCN, LightGCNConfig
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Any, device: torch.device) -> LightGCN:
    """Owned full mode reads only this rank's adjacency rows (when the bundle has the graph
    tables and their weights are used as they are); otherwise the model keeps the whole graph."""
    from distrec.data.bundle import Bundle
    from distrec.graph.adjacency import bipartite_from_bundle

    b = cfg.model.behavior or manifest.target_behavior
    names = (f"ui.{b}", f"iu.{b}")  # iu: only checked present (the transpose of ui)
    common = dict(layers=cfg.graph.layers, l2=cfg.train.l2, device=device)
    has_tables = all(f"graphs/{n}" in manifest.tables for n in names)
    if cfg.graph.partition == "owned" and has_tables and not cfg.model.renormalize:
        from distrec.graph.partition import NodePartition, own_rows

        path = cfg.data.bundle

        def rows(part: NodePartition) -> Any:
            # the users' ui rows only: the items' side is their transpose (pushed, halo.py)
            return own_rows(Bundle(path), names[0], *part.range("user"))

        counts = {"user": manifest.num_users, "item": manifest.num_items}
        return LightGCN(cfg.model, counts, partition="owned", rows=rows, **common)  # type: ignore[arg-type]
    graph = bipartite_from_bundle(
        Bundle(cfg.data.bundle), cfg.model.behavior or None, renormalize=cfg.model.renormalize
    )
    return LightGCN(cfg.model, graph, partition=cfg.graph.partition, **common)  # type: ignore[arg-type]


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
        fanout_over=cfg.graph.fanout_over,
        max_frontier=cfg.graph.max_frontier,
        graph=graph,
        behaviors=[behavior] if behavior else None,
    )


SPEC = ModelSpec(
    name="lightgcn", config_cls=LightGCNConfig, build_model=build_model, build_data=build_data
)

__all__ = ["LightGCN", "LightGCNConfig", "SPEC"]
