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
from distrec.models.igrec.graphs import BundleGraphs, IGRecGraphs, load_graphs
from distrec.models.igrec.model import IGRec
from distrec.models.igrec.sampled import IGRecSampler
from distrec.models.registry import ModelSpec


def build_model(cfg: Any, manifest: Manifest, device: torch.device) -> IGRec:
    """IGRec for ``cfg`` (a distrec Config); the graphs come from ``cfg.data.bundle``: owned
    mode reads only this rank's rows of the bundle's graph tables (when it has them)."""
    graphs: IGRecGraphs | BundleGraphs
    try:
        if cfg.graph.partition != "owned":
            raise FileNotFoundError
        graphs = BundleGraphs(cfg.data.bundle, manifest)
    except FileNotFoundError:  # replicated, or a bundle without the graph tables
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
    from distrec.data.bundle import Bundle

    manifest = Bundle(bundle_dir).manifest
    sampler = None
    if cfg.graph.mode == "sampled":  # the sampler holds the whole graph (replicated)
        sampler = IGRecSampler(
            load_graphs(bundle_dir, manifest),
            layers=cfg.graph.layers,
            fanout=list(cfg.graph.fanout),
            fanout_over=cfg.graph.fanout_over,
            max_frontier=cfg.graph.max_frontier,
            member_cap=cfg.model.member_cap,
        )
    return IGRecData(
        bundle_dir,
        target_behavior=len(manifest.behaviors) - 1,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_negatives=cfg.data.num_negatives,
        rank=rank,
        world=world_size,
        seed=cfg.run.seed,
        with_interest_table=cfg.model.interest_module == "embedding",
        sampler=sampler,
        partitions=cfg.data.partitions,
        buffer_rows=cfg.data.shuffle_buffer,
        eval_max_users=cfg.eval.max_users,
        epochs=cfg.train.epochs,
    )


SPEC = ModelSpec(
    name="igrec", config_cls=IGRecConfig, build_model=build_model, build_data=build_data
)

__all__ = ["SPEC", "IGRec", "IGRecConfig", "IGRecData", "build_data", "build_model"]
