"""IGRec: interest-based group-enhanced recommendation (Liu et al.; ../shared/papers/igrec.md).

Modules: ``disentangler`` (self-gating interests), ``aggregator`` (attention readout, member cap,
Gumbel-softmax selection), ``fusion`` (group/user fusion, interest regulariser), ``model``
(IGRec with the LightGCN rating predictor), ``data`` (BPR triples for users and groups).
"""

from __future__ import annotations

from typing import Any

import torch

from distrec.data.schema import Manifest
from distrec.models.igrec.config import IGRecConfig
from distrec.models.igrec.data import IGRecData
from distrec.models.igrec.graphs import load_graphs
from distrec.models.igrec.model import IGRec
from distrec.models.igrec.sampled import IGRecSampler
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Manifest, device: torch.device) -> IGRec:
    """IGRec for ``cfg`` (a distrec Config); the graphs come from ``cfg.data.bundle``."""
    graphs = load_graphs(cfg.data.bundle, manifest)
    return IGRec(
        cfg.model,
        graphs,
        layers=cfg.graph.layers,
        l2=cfg.train.l2,
        device=device,
        seed=cfg.run.seed,
        partition=cfg.graph.partition,
    )


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> IGRecData:
    manifest = Manifest.load(bundle_dir)
    graphs = load_graphs(bundle_dir, manifest)
    sampler = None
    if cfg.graph.mode == "sampled":
        sampler = IGRecSampler(
            graphs,
            layers=cfg.graph.layers,
            fanout=list(cfg.graph.fanout),
            fanout_over=cfg.graph.fanout_over,
            max_frontier=cfg.graph.max_frontier,
            member_cap=cfg.model.member_cap,
        )
    return IGRecData(
        bundle_dir,
        graphs,
        target_behavior=len(manifest.behaviors) - 1,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_negatives=cfg.data.num_negatives,
        rank=rank,
        world=world_size,
        seed=cfg.run.seed,
        with_interest_table=cfg.model.interest_module == "embedding",
        sampler=sampler,
    )


SPEC = ModelSpec(
    name="igrec", config_cls=IGRecConfig, build_model=build_model, build_data=build_data
)

__all__ = ["SPEC", "IGRec", "IGRecConfig", "IGRecData", "build_data", "build_model"]
