"""Everything a run needs, built once per process: config, process group, model, DMP, optimizer.

Used by ``distrec.train`` (training) and by ``distrec.evaluate`` / ``distrec.recommend`` (which load
a run's resolved config and its best checkpoint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distrec.config import Config, dump_yaml, load_config
from distrec.data.bundle import Bundle
from distrec.data.payloads import PayloadTraining
from distrec.data.schema import Manifest
from distrec.distributed.env import DistEnv, init_distributed, setup_logging
from distrec.distributed.exchange import make_exchange
from distrec.distributed.init import init_tables, table_specs
from distrec.distributed.sharding import (
    build_optimizer,
    embedding_modules,
    feature_to_table,
    shard_model,
)
from distrec.models.api import RecModel, TaskData
from distrec.models.registry import ModelSpec, get_spec


class NullMetrics:
    """Metrics sink with the Prometheus metrics' methods, used when metrics are off/unavailable."""

    def step(self, **_: Any) -> None: ...
    def epoch(self, epoch: int) -> None: ...
    def eval(self, **_: Any) -> None: ...
    def checkpoint(self, **_: Any) -> None: ...
    def close(self) -> None: ...


def make_metrics(cfg: Config, env: DistEnv) -> Any:
    if not cfg.metrics.enabled:
        return NullMetrics()
    try:
        from distrec.metrics.prometheus import make_metrics as make
    except ImportError:  # the ops module is optional for the engine
        return NullMetrics()
    return make(cfg.metrics, rank=env.rank, local_rank=env.local_rank, model=cfg.model_name)


@dataclass
class Session:
    cfg: Config
    env: DistEnv
    spec: ModelSpec
    manifest: Manifest
    model: RecModel  # the model with sharded submodules (DMP.module)
    wrapped: nn.Module  # what to call for training (DMP, or the model itself)
    optimizer: Any | None
    data: TaskData
    features: dict[str, str]  # KJT feature -> table
    log: logging.Logger

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run.dir)


def build_session(
    model_name: str,
    cfg: Config | None = None,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    *,
    write_config: bool = True,
    with_optimizer: bool = True,
) -> Session:
    """Initialise the process group and build the sharded model, its optimizer and its data."""
    env = init_distributed()
    if cfg is None:
        cfg = load_config(model_name, config_path, overrides)
    run_dir = Path(cfg.run.dir)
    if write_config and env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / ".config.yaml.tmp"
        tmp.write_text(dump_yaml(cfg))
        tmp.replace(run_dir / "config.yaml")
    log = setup_logging(env.rank, run_dir / "logs")
    if not cfg.data.bundle:
        raise SystemExit("data.bundle is not set (the dataset bundle directory)")
    spec = get_spec(cfg.model_name)
    manifest = Bundle(cfg.data.bundle).manifest  # a directory or a URI (distrec.data.fs)
    torch.manual_seed(cfg.run.seed)
    model = spec.build_model(cfg, manifest, torch.device("meta"))
    features = feature_to_table(model)
    optimizer = None
    if embedding_modules(model):
        specs = table_specs(model)
        dmp = shard_model(model, cfg, env.device, log)
        n = init_tables(dmp, specs, cfg.run.seed)
        log.debug("initialised %d tables", n)
        wrapped: nn.Module = dmp
        inner = dmp.module
        if with_optimizer and spec.trainable:
            optimizer = build_optimizer(dmp, cfg)
    else:  # nothing to shard (e.g. Popularity): plain module
        model = spec.build_model(cfg, manifest, env.device)
        wrapped = inner = model
    if hasattr(inner, "set_exchange"):  # graph models: rows of other ranks move through it
        inner.set_exchange(make_exchange())
    data = spec.build_data(cfg, cfg.data.bundle, env.rank, env.world_size)
    if isinstance(data, PayloadTraining):  # every model's batches: built ahead the same way
        data.init_prefetch(cfg.data.prefetch, cfg.data.num_workers)
    return Session(cfg, env, spec, manifest, inner, wrapped, optimizer, data, features, log)


def load_run_config(run_dir: str, overrides: list[str] | None = None) -> Config:
    """The resolved config a run wrote (``<run>/config.yaml``), with optional overrides."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: is {run_dir} a distrec run directory?")
    tree = yaml.safe_load(path.read_text())
    name = tree["model_name"]
    return load_config(name, str(path), list(overrides or []) + [f"run.dir={run_dir}"])


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
