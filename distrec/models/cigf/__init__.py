"""CIGF (Guo et al., WWW 2023): compressed interaction graph convolution + MESI. ``SPEC`` for
the registry. Full mode reads the K behavior adjacencies from ``cfg.data.bundle``."""

from __future__ import annotations

from typing import Any

import torch

from distrec.models.cigf.config import CigfConfig
from distrec.models.cigf.model import Cigf
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Any, device: torch.device) -> Cigf:
    from distrec.data.bundle import Bundle
    from distrec.models.cigf.data import resolve_behaviors
    from distrec.models.cigf.graph import load_behavior_adjacency, row_normalise

    behaviors = resolve_behaviors(cfg.model.behaviors, manifest.behaviors)
    adjs, adj_rows = None, None
    if cfg.graph.mode == "full" and cfg.graph.partition == "owned":
        adj_rows = _own_rows_reader(cfg.data.bundle, behaviors, cfg.model.norm == "left")
    elif cfg.graph.mode == "full":
        adjs = load_behavior_adjacency(Bundle(cfg.data.bundle), behaviors)
        if cfg.model.norm == "left":
            adjs = [row_normalise(a) for a in adjs]
    elif cfg.model.norm != "symm":
        raise ValueError("model.norm: 'left' is implemented for graph.mode=full only")
    return Cigf(
        cfg.model,
        num_users=manifest.num_users,
        num_items=manifest.num_items,
        behaviors=behaviors,
        layers=cfg.graph.layers,
        adjs=adjs,
        l2=cfg.train.l2,
        device=device,
        partition=cfg.graph.partition,
        adj_rows=adj_rows,
    )


def _own_rows_reader(path: str, behaviors: list[str], left: bool) -> Any:
    """Reads a rank's rows of the K behavior graphs (owned full mode): per behavior the user rows
    of ``ui.<b>`` and the item rows of ``iu.<b>`` (``left``: weights 1/row degree)."""
    from distrec.data.bundle import Bundle
    from distrec.data.schema import iu_graph, ui_graph
    from distrec.graph.partition import NodePartition, own_rows
    from distrec.models.cigf.graph import row_normalise

    def read(part: NodePartition) -> list[list[tuple[str, str, Any]]]:
        bundle = Bundle(path)
        out = []
        for b in behaviors:
            bundle.behavior_index(b)  # a clear error for a behavior the bundle lacks
            ui = own_rows(bundle, ui_graph(b), *part.range("user"))
            iu = own_rows(bundle, iu_graph(b), *part.range("item"))
            if left:
                ui, iu = row_normalise(ui), row_normalise(iu)
            out.append([("user", "item", ui), ("item", "user", iu)])
        return out

    return read


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> Any:
    from distrec.models.cigf.data import CigfData

    return CigfData.from_config(cfg, bundle_dir, rank, world_size)


SPEC = ModelSpec(name="cigf", config_cls=CigfConfig, build_model=build_model, build_data=build_data)

__all__ = ["SPEC", "Cigf", "CigfConfig"]
