"""Sharding: TorchRec's planner under verified constraints, DistributedModelParallel, optimizers.

Every embedding table is placed by TorchRec's ``EmbeddingShardingPlanner`` on a ``Topology`` built
from the world size, the device type and its memory (CUDA: the device's memory; CPU: the host's
memory shared by the host's ranks; ``sharding.memory_per_rank_gb`` overrides both). The planner
chooses among table_wise, row_wise, column_wise and table_row_wise from the table sizes and its
cost model. ``sharding.default`` set to a sharding type, or ``sharding.tables.<name>``, pins a
table to that type; the planner then only places it (which rank, which rows).

The constraints allow only what was verified on the device (../shared/STACK.md):

* the CPU sharders do not advertise row_wise / table_row_wise for EmbeddingBagCollection (so the
  stock planner never proposes them); the EBC sharder below adds them, and the dense kernel for
  model-parallel types (an ordinary parameter trained by the dense optimizer, any optimizer);
* EmbeddingCollection: never data_parallel (wrong values or a crash), never table_row_wise
  (refused), fused kernel only on CPU;
* data_parallel only with the dense kernel, and never chosen by the planner when
  ``sharding.compute_kernel=fused``: a data-parallel table ignores the fused optimizer and would
  silently train with the dense one;
* fused Adam only on CUDA.

Example::

    plan, summary = plan_sharding(model, cfg, world_size=2, device=torch.device("cpu"))
    print(summary.format())  # per table: type, kernel, ranks; per rank: memory estimate
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec import optim as trec_optim
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import (
    KernelConfig,
    PlannerError,
    ShardingOption,
    Stats,
    Topology,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ModuleSharder, ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from distrec.config import Config, ConfigError

log = logging.getLogger("distrec")

AUTO = "auto"
TW, RW, CW, TWRW, DP = (
    ShardingType.TABLE_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.COLUMN_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
    ShardingType.DATA_PARALLEL.value,
)
FUSED, DENSE = EmbeddingComputeKernel.FUSED.value, EmbeddingComputeKernel.DENSE.value
#: fraction of each rank's memory the planner leaves to dense parameters, activations, batches
RESERVED = 0.15

_FUSED_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
}
# the optimizer classes whose state the planner's storage estimator knows (its multipliers)
_FUSED_CLASSES: dict[str, type] = {
    "sgd": trec_optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": trec_optim.RowWiseAdagrad,
    "adam": torch.optim.Adam,
}
_DENSE_CLASSES: dict[str, type] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
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


def _configs(m: EmbeddingBagCollection | EmbeddingCollection) -> list[Any]:
    if isinstance(m, EmbeddingBagCollection):
        return list(m.embedding_bag_configs())
    return list(m.embedding_configs())


def _weights(m: EmbeddingBagCollection | EmbeddingCollection) -> dict[str, nn.Parameter]:
    bags = m.embedding_bags if isinstance(m, EmbeddingBagCollection) else m.embeddings
    return {name: bags[name].weight for name in bags}


def feature_to_table(model: nn.Module) -> dict[str, str]:
    """KJT feature name -> embedding table name, over all embedding modules of ``model``.

    Used to count embedding lookups per table from a batch's KJTs.
    """
    out: dict[str, str] = {}
    for m in embedding_modules(model).values():
        for c in _configs(m):
            for f in c.feature_names:
                out[f] = c.name
    return out


class _EBCSharder(EmbeddingBagCollectionSharder):
    """EBC sharder that also proposes row_wise / table_row_wise on CPU (verified there; the stock
    sharder advertises them on CUDA only)."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = list(super().sharding_types(compute_device_type))
        return types + [t for t in (RW, TWRW) if t not in types]


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
        _EBCSharder(fused_params=dict(fused)),
        EmbeddingCollectionSharder(fused_params=dict(fused)),
    ]


def _check_table(kind: str, table: str, sharding: str, kernel: str, device: torch.device) -> None:
    where = f"sharding.tables.{table}"
    if kind == "ec":
        if sharding == DP:
            raise ConfigError(
                f"{where}: data_parallel gives wrong values for EmbeddingCollection "
                "(STACK.md); use row_wise, table_wise or column_wise"
            )
        if sharding == TWRW:
            raise ConfigError(f"{where}: table_row_wise is not supported for EmbeddingCollection")
        if kernel != FUSED and device.type == "cpu":
            raise ConfigError(f"{where}: EmbeddingCollection on CPU needs compute_kernel=fused")


def _cw_dim(dim: int, world_size: int) -> int:
    """Column-shard width: ``dim`` split over the ranks in blocks of 4 (fbgemm's alignment); the
    planner's own default (128 columns) would leave every table narrower than that whole."""
    return max(4, (dim // max(world_size, 1)) // 4 * 4)


def table_constraints(
    model: nn.Module, cfg: Config, world_size: int, device: torch.device
) -> tuple[dict[str, ParameterConstraints], dict[str, str]]:
    """Per-table planner constraints from the config and the verified limits; also each table's
    source (``planned`` or ``set``, i.e. pinned by ``sharding.default`` / ``sharding.tables``)."""
    kernel = cfg.sharding.compute_kernel
    # row-wise Adagrad keeps one accumulator per row, the mean of g^2 over the row's columns; a
    # column shard averages over its own columns only, a different optimizer than one rank's
    exact_cw = kernel == DENSE or cfg.train.sparse_optimizer != "rowwise_adagrad"
    cw = [CW] if exact_cw else []
    constraints: dict[str, ParameterConstraints] = {}
    source: dict[str, str] = {}
    for module in embedding_modules(model).values():
        kind = "ec" if isinstance(module, EmbeddingCollection) else "ebc"
        for c in _configs(module):
            pinned = cfg.sharding.tables.get(c.name)
            if pinned is None and cfg.sharding.default != AUTO:
                pinned = cfg.sharding.default
            if pinned is not None:
                _check_table(kind, c.name, pinned, kernel, device)
                types = [pinned]
            elif kind == "ec":
                _check_table(kind, c.name, RW, kernel, device)
                types = [TW, RW] + cw
            else:
                types = [TW, RW, TWRW] + cw + ([DP] if kernel == DENSE else [])
            # TorchRec's planner pairs the dense kernel with data_parallel only; a model-parallel
            # table with sharding.compute_kernel=dense is planned as fused, then switched
            kernels = ([FUSED] if types != [DP] else []) + ([DENSE] if DP in types else [])
            constraints[c.name] = ParameterConstraints(
                sharding_types=types,
                compute_kernels=kernels,
                min_partition=_cw_dim(c.embedding_dim, world_size),
            )
            source[c.name] = "planned" if pinned is None else "set"
    known = set(constraints)
    unknown = sorted(set(cfg.sharding.tables) - known)
    if unknown:
        raise ConfigError(
            f"sharding.tables.{unknown[0]}: no such table; tables: {', '.join(sorted(known))}"
        )
    return constraints, source


def host_memory_bytes() -> int:
    """Physical memory of this host, or the cgroup's limit when that is lower (containers)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()  # noqa: SIM115 - a one-line pseudo file
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


def build_topology(
    cfg: Config, world_size: int, device: torch.device, local_world_size: int | None = None
) -> Topology:
    """Planner topology: ``world_size`` ranks of ``device``'s type with their memory each.

    CUDA ranks get the device's memory (HBM) plus their share of host memory (DDR); CPU ranks get
    their share of host memory; ``sharding.memory_per_rank_gb`` (if > 0) replaces the detected
    figure of the device that holds the tables.
    """
    local = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    ddr = host_memory_bytes() // max(local, 1)
    override = int(cfg.sharding.memory_per_rank_gb * 2**30)
    hbm = None
    if device.type == "cuda":
        hbm = override or torch.cuda.get_device_properties(device).total_memory
    elif override:
        ddr = override
    return TopologyFactory.create_topology(
        TrainerConfig(
            world_size=world_size, local_world_size=local, hbm_cap_bytes=hbm, ddr_cap_bytes=ddr
        ),
        kernel_config=KernelConfig(compute_device=device.type),
    )


@dataclass
class TablePlan:
    """Where one table went: ``ranks`` holds each shard's rank, ``shards`` its [rows, cols]."""

    module: str
    name: str
    rows: int
    dim: int
    sharding_type: str
    compute_kernel: str
    source: str  # planned | set
    ranks: list[int]
    shards: list[list[int]]


@dataclass
class PlanSummary:
    """The plan in words: per table, and per rank the planner's memory estimate (bytes of weights,
    optimizer state and lookup buffers, from TorchRec's storage estimator)."""

    world_size: int
    device: str
    capacity_bytes: int  # per rank, before the planner's reservation
    tables: dict[str, TablePlan] = field(default_factory=dict)
    rank_bytes: list[int] = field(default_factory=list)

    def format(self) -> str:
        gb = 2**30
        lines = [
            f"sharding plan (world {self.world_size}, {self.device}, "
            f"{self.capacity_bytes / gb:.1f} GiB per rank):"
        ]
        for t in self.tables.values():
            ranks = ",".join(str(r) for r in sorted(set(t.ranks)))
            lines.append(
                f"  {t.module or '<root>'}.{t.name}: {t.rows}x{t.dim} {t.sharding_type} "
                f"({t.compute_kernel}, {t.source}) on ranks {ranks}"
            )
        lines.append(
            "  memory estimate per rank: "
            + ", ".join(f"rank {r}: {_size(b)}" for r, b in enumerate(self.rank_bytes))
        )
        return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


class _Capture(Stats):
    """Keeps the planner's chosen sharding options (the planner passes them to its stats)."""

    def __init__(self) -> None:
        self.best: list[ShardingOption] = []

    def log(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - Stats' signature
        self.best = list(kwargs.get("best_plan") or [])


def _optimizer_class(cfg: Config, kernel: str) -> type:
    if kernel == DENSE:
        return _DENSE_CLASSES[cfg.train.dense_optimizer]
    return _FUSED_CLASSES[cfg.train.sparse_optimizer]


def plan_sharding(
    model: nn.Module,
    cfg: Config,
    world_size: int,
    device: torch.device,
    *,
    local_world_size: int | None = None,
) -> tuple[ShardingPlan, PlanSummary]:
    """TorchRec's planner over every embedding table of ``model`` (tables may be on ``meta``).

    Runs on the calling process only (no collectives); :func:`shard_model` runs it on rank 0 and
    broadcasts the result. Raises ConfigError when no plan fits the ranks' memory.
    """
    constraints, source = table_constraints(model, cfg, world_size, device)
    modules = embedding_modules(model)
    if not modules:
        return ShardingPlan({}), PlanSummary(world_size, device.type, 0)
    topology = build_topology(cfg, world_size, device, local_world_size)
    capture = _Capture()
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=max(1, cfg.data.batch_size // world_size),
        storage_reservation=FixedPercentageStorageReservation(RESERVED),
        stats=[capture],
        constraints=constraints,
        debug=False,
    )
    # the storage estimator reads the optimizer (its state's size) from the weights; the fused
    # optimizer itself travels in the sharders' fused_params, so the hint is removed afterwards
    weights = [w for m in modules.values() for w in _weights(m).values()]
    kernel_of = {
        name: (DENSE if c.compute_kernels == [DENSE] else cfg.sharding.compute_kernel)
        for name, c in constraints.items()
    }  # the kernel each table trains with (dense: the dense optimizer holds its state)
    for m in modules.values():
        for name, w in _weights(m).items():
            w._optimizer_classes = [_optimizer_class(cfg, kernel_of[name])]  # type: ignore[attr-defined]
    try:
        plan = planner.plan(model, make_sharders(cfg, device))
    except PlannerError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(
            f"sharding: no plan fits {world_size} x {device.type} ranks "
            f"({_gib(topology)} GiB each; sharding.memory_per_rank_gb sets it): {first}"
        ) from None
    finally:
        for w in weights:
            if hasattr(w, "_optimizer_classes"):
                del w._optimizer_classes
    for module_plan in plan.plan.values():
        for table, ps in module_plan.items():  # type: ignore[attr-defined]
            ps.compute_kernel = kernel_of[table]  # dense on a model-parallel table: see above
    summary = _summarise(modules, capture.best, source, topology, world_size, device)
    for t in summary.tables.values():
        t.compute_kernel = kernel_of[t.name]
    return plan, summary


def _gib(topology: Topology) -> str:
    s = topology.devices[0].storage
    return f"{(s.hbm or s.ddr) / 2**30:.1f}"


def _summarise(
    modules: dict[str, EmbeddingBagCollection | EmbeddingCollection],
    best: list[ShardingOption],
    source: dict[str, str],
    topology: Topology,
    world_size: int,
    device: torch.device,
) -> PlanSummary:
    cap = topology.devices[0].storage
    out = PlanSummary(world_size, device.type, cap.hbm if device.type == "cuda" else cap.ddr)
    out.rank_bytes = [0] * world_size
    dims = {
        c.name: (c.num_embeddings, c.embedding_dim) for m in modules.values() for c in _configs(m)
    }
    for so in best:
        rows, dim = dims[so.name]
        ranks = [int(s.rank) for s in so.shards if s.rank is not None]
        out.tables[so.name] = TablePlan(
            so.fqn.rsplit(".", 1)[0] if "." in so.fqn else "",
            so.name,
            rows,
            dim,
            so.sharding_type,
            so.compute_kernel,
            source[so.name],
            ranks,
            [list(s.size) for s in so.shards],
        )
        for s in so.shards:
            if s.rank is not None and s.storage is not None:
                out.rank_bytes[s.rank] += int(s.storage.hbm + s.storage.ddr)
    return out


def shard_model(
    model: nn.Module, cfg: Config, device: torch.device, logger: logging.Logger | None = None
) -> DistributedModelParallel:
    """Wrap ``model`` (embedding tables on ``meta``) in DMP with the planner's plan; DDP for the
    rest. Rank 0 plans and broadcasts the plan (every rank then shards alike) and logs it."""
    world, rank = dist.get_world_size(), dist.get_rank()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = plan_sharding(model, cfg, world, device)
        except ConfigError as e:  # every rank must leave the broadcast, then raise
            box[0] = e
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], ConfigError):
        raise box[0]
    plan, summary = box[0]
    if rank == 0 and summary.tables:
        (logger or log).info("%s", summary.format())
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
