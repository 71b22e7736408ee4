"""Sharding: an explicit per-table plan, DistributedModelParallel and the optimizers.

The plan is built table by table from ``sharding.default`` and ``sharding.tables.<name>`` with
torchrec's plan constructors, not by the automatic planner: on CPU the sharders do not advertise
row_wise/table_row_wise for EmbeddingBagCollection, so the planner would never pick them, and on
small tables it picks data_parallel, which silently breaks EmbeddingCollection (STACK.md). The
constraints below therefore only allow what was verified to work on the device:

* EmbeddingCollection: fused kernel only, never data_parallel or table_row_wise;
* fused Adam only on CUDA (on CPU use rowwise_adagrad/adagrad/sgd, or the dense kernel);
* data_parallel tables use the dense kernel and train with the dense optimizer.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import (
    column_wise,
    construct_module_sharding_plan,
    data_parallel,
    row_wise,
    table_row_wise,
    table_wise,
)
from torchrec.distributed.types import ModuleSharder, ShardingEnv, ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from distrec.config import Config, ConfigError

log = logging.getLogger("distrec")

_FUSED_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
}


def embedding_modules(
    model: nn.Module,
) -> dict[str, EmbeddingBagCollection | EmbeddingCollection]:
    """Module path -> EmbeddingBagCollection / EmbeddingCollection (weighted EBCs included)."""
    return {
        fqn: m  # type: ignore[misc]
        for fqn, m in model.named_modules()
        if isinstance(m, EmbeddingBagCollection | EmbeddingCollection)
    }


def feature_to_table(model: nn.Module) -> dict[str, str]:
    """KJT feature name -> embedding table name, over all embedding modules of ``model``.

    Used to count embedding lookups per table from a batch's KJTs.
    """
    out: dict[str, str] = {}
    for m in embedding_modules(model).values():
        configs: list[Any] = list(
            m.embedding_bag_configs()
            if isinstance(m, EmbeddingBagCollection)
            else m.embedding_configs()
        )
        for c in configs:
            for f in c.feature_names:
                out[f] = c.name
    return out


def _check_table(kind: str, table: str, sharding: str, kernel: str, device: torch.device) -> None:
    where = f"sharding.tables.{table}"
    if kind == "ec":
        if sharding == "data_parallel":
            raise ConfigError(
                f"{where}: data_parallel gives wrong values for EmbeddingCollection "
                "(STACK.md); use row_wise, table_wise or column_wise"
            )
        if sharding == "table_row_wise":
            raise ConfigError(f"{where}: table_row_wise is not supported for EmbeddingCollection")
        if kernel != "fused" and device.type == "cpu":
            raise ConfigError(f"{where}: EmbeddingCollection on CPU needs compute_kernel=fused")


def build_plan(
    model: nn.Module, cfg: Config, world_size: int, device: torch.device
) -> tuple[ShardingPlan, list[str]]:
    """An explicit ShardingPlan for every embedding module of ``model`` plus a printable summary.

    Per table: ``cfg.sharding.tables[name]`` if set, else ``cfg.sharding.default``.
    """
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    kernel = cfg.sharding.compute_kernel
    plan: dict[str, Any] = {}
    lines: list[str] = []
    known_tables: set[str] = set()
    sharders = make_sharders(cfg, device)
    for fqn, module in embedding_modules(model).items():
        kind = "ec" if isinstance(module, EmbeddingCollection) else "ebc"
        configs: list[Any] = list(
            module.embedding_configs()
            if isinstance(module, EmbeddingCollection)
            else module.embedding_bag_configs()
        )
        per_param = {}
        for i, c in enumerate(configs):
            known_tables.add(c.name)
            st = cfg.sharding.tables.get(c.name, cfg.sharding.default)
            _check_table(kind, c.name, st, kernel, device)
            k = "dense" if st == "data_parallel" else kernel
            if st == "table_wise":
                gen = table_wise(rank=i % world_size, compute_kernel=k)
            elif st == "row_wise":
                gen = row_wise(compute_kernel=k)
            elif st == "column_wise":
                gen = column_wise(ranks=list(range(world_size)), compute_kernel=k)
            elif st == "table_row_wise":
                gen = table_row_wise(host_index=0)
            else:
                gen = data_parallel()
            per_param[c.name] = gen
            lines.append(
                f"{fqn or '<root>'}.{c.name}: {c.num_embeddings}x{c.embedding_dim} {st} ({k})"
            )
        sharder = sharders[0] if kind == "ebc" else sharders[1]
        plan[fqn] = construct_module_sharding_plan(
            module,
            per_param,
            sharder=sharder,
            local_size=local_size,
            world_size=world_size,
            device_type=device.type,
        )
    unknown = sorted(set(cfg.sharding.tables) - known_tables)
    if unknown:
        raise ConfigError(
            f"sharding.tables.{unknown[0]}: no such table; tables: {', '.join(sorted(known_tables))}"
        )
    return ShardingPlan(plan), lines


def make_sharders(cfg: Config, device: torch.device) -> list[ModuleSharder[nn.Module]]:
    """EBC and EC sharders carrying the fused sparse optimizer (applied inside backward)."""
    name = cfg.train.sparse_optimizer
    if name == "adam" and device.type != "cuda" and cfg.sharding.compute_kernel == "fused":
        raise ConfigError(
            "train.sparse_optimizer: fused adam is not supported on CPU; use rowwise_adagrad, "
            "adagrad or sgd, or sharding.compute_kernel=dense (tables then train with the dense "
            "optimizer)"
        )
    fused: dict[str, Any] = {
        "optimizer": _FUSED_OPTIMIZERS[name],
        "learning_rate": cfg.train.sparse_lr,
        "eps": 1e-8,
    }
    if cfg.train.weight_decay:
        fused["weight_decay"] = cfg.train.weight_decay
    return [
        EmbeddingBagCollectionSharder(fused_params=dict(fused)),
        EmbeddingCollectionSharder(fused_params=dict(fused)),
    ]


def shard_model(
    model: nn.Module, cfg: Config, device: torch.device, logger: logging.Logger | None = None
) -> DistributedModelParallel:
    """Wrap ``model`` (embedding tables on ``meta``) in DMP with the explicit plan; DDP for the rest.

    The plan is logged on rank 0.
    """
    world = dist.get_world_size()
    plan, lines = build_plan(model, cfg, world, device)
    if dist.get_rank() == 0 and lines:
        (logger or log).info("sharding plan (world %d):\n  %s", world, "\n  ".join(lines))
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=device,
        plan=plan,
        sharders=make_sharders(cfg, device),
    )


def _dense_optimizer(cfg: Config, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.dense_optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.dense_optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay)


def build_optimizer(dmp: DistributedModelParallel, cfg: Config) -> KeyedOptimizer:
    """Fused sparse optimizer (already inside DMP) + dense optimizer over every other parameter."""
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    opts: list[tuple[str, KeyedOptimizer]] = [("sparse", dmp.fused_optimizer)]
    if dense:
        opts.append(
            (
                "dense",
                KeyedOptimizerWrapper(dense, lambda ps: _dense_optimizer(cfg, list(ps))),
            )
        )
    return CombinedOptimizer(opts)
