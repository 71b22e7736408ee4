"""Typed run configuration: nested dataclasses, YAML files, ``key=value`` overrides.

``load_config(model, path, overrides)`` builds a :class:`Config` whose ``model`` field is the
model's own dataclass (from the registry). Unknown keys and values of the wrong type are
errors that name the key path, e.g. ``train.lr: expected float, got 'fast'``.

Example::

    cfg = load_config("lightgcn", "configs/lightgcn/mafengwo.yaml", ["train.lr=0.01"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


@dataclass
class DataConfig:
    bundle: str = ""  # dataset bundle directory (spark_jobs.build_bundle output)
    batch_size: int = 2048  # global batch; each rank takes batch_size // world_size
    num_negatives: int = 1
    eval_batch_size: int = 1024  # users per evaluation step (global)
    num_workers: int = 0  # > 0: batches are built in a forked worker process per rank
    prefetch: int = 2  # batches prepared ahead (by the worker process, else a thread)
    partitions: int = 0  # virtual shards P (0: the bundle manifest's, else 16); P % world == 0
    shuffle_buffer: int = 524288  # pairs per shuffle window and shard (bounds reader memory)


@dataclass
class GraphConfig:
    mode: str = "full"  # full | sampled
    layers: int = 3
    fanout: list[int] = field(default_factory=list)  # per hop; empty or -1 = unlimited
    fanout_over: str = "relation"  # sampled: fanout per relation, or per node over their union
    max_frontier: int = 0  # sampled: at most this many draws per hop and node type (0 = no cap)
    # full mode: "owned" = each rank propagates its own rows (halo all-to-all); "replicated" =
    # every rank looks up every row and propagates the whole graph (small graphs only)
    partition: str = "owned"


@dataclass
class TrainConfig:
    epochs: int = 100
    max_steps: int = 0  # 0 = no limit; else stop after this many optimizer steps
    lr: float = 1e-3  # dense optimizer
    sparse_lr: float = 0.05  # fused sparse optimizer
    sparse_optimizer: str = "rowwise_adagrad"  # sgd | adagrad | rowwise_adagrad | adam (GPU)
    dense_optimizer: str = "adam"  # adam | adagrad | sgd
    weight_decay: float = 0.0
    l2: float = 1e-4  # embedding L2 on the batch's rows, added to the loss by the model
    eval_every: int = 1  # epochs
    patience: int = 10  # early stopping: evaluations without improvement
    select_metric: str = "ndcg@10"  # metric on validation that picks the best checkpoint
    pipeline: bool = True  # TrainPipelineSparseDist where the model traces (MF); else logged
    log_every: int = 50  # steps


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    protocol: str = "full"  # full | sampled (fixed candidates from the bundle's eval/ table)
    # mask each query's already-seen items (train positives, + valid ones on test) from the
    # ranking; false ranks every item (evaluate, recommend and validation alike)
    exclude_train: bool = True
    auc: bool = True  # false: no AUC (a second chunked pass over the items) at catalogue scale
    # > 0: evaluate a seeded uniform sample of at most this many of a split's queries (the same
    # sorted users on every rank and at every world size); 0 = all
    max_users: int = 0


@dataclass
class ShardingConfig:
    # auto (TorchRec's planner) | table_wise | row_wise | column_wise | table_row_wise |
    # data_parallel (every table pinned to that type; the planner only places it)
    default: str = "auto"
    tables: dict[str, str] = field(default_factory=dict)  # per-table type, overrides default
    compute_kernel: str = "fused"  # fused | dense
    memory_per_rank_gb: float = 0.0  # planner's memory per rank; 0 = detected (device or host)


@dataclass
class MetricsConfig:
    enabled: bool = True
    port: int = 9400  # rank r listens on port + local_rank
    addr: str = "127.0.0.1"
    pushgateway: str = ""  # host:port; push on close when set
    job: str = "distrec"


@dataclass
class RunConfig:
    dir: str = "runs/default"  # resolved config, logs, checkpoints, metrics JSON
    seed: int = 0
    resume: bool = False
    keep_checkpoints: int = 2
    checkpoint_every: int = 0  # steps; 0 = at each evaluation only


@dataclass
class Config:
    model_name: str = ""
    model: Any = None  # the model's own dataclass, from the registry
    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against a type annotation; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!s}; valid keys{' of ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, v in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(v, hints[name], key)
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
        node = nxt
    # YAML parsing gives ints/floats/bools/lists from strings; typed coercion happens in _build.
    node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""


def parse_overrides(overrides: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not key=value (e.g. train.lr=0.01)")
        k, v = o.split("=", 1)
        if not k:
            raise ConfigError(f"override {o!r} has an empty key")
        pairs.append((k.strip(), v))
    return pairs


def load_config(
    model_name: str, path: str | None = None, overrides: list[str] | None = None
) -> Config:
    """Load ``path`` (YAML) for ``model_name``, apply ``key=value`` overrides, validate types."""
    from distrec.models.registry import get_spec  # late: the registry imports model modules

    spec = get_spec(model_name)
    tree: dict[str, Any] = {}
    if path:
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} does not exist") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        tree = loaded
    for k, v in parse_overrides(overrides or []):
        _set_path(tree, k, v)
    name_in_file = tree.pop("model_name", model_name)
    if name_in_file != model_name:
        raise ConfigError(
            f"{path}: model_name is {name_in_file!r} but the command asks for {model_name!r}"
        )
    model_values = tree.pop("model", {}) or {}
    where = f"{path}: " if path else ""
    try:
        cfg = _build(Config, tree)
        cfg.model = _build(spec.config_cls, model_values, "model")
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
    cfg.model_name = model_name
    validate(cfg)
    return cfg


_CHOICES = {
    "graph.mode": ("full", "sampled"),
    "graph.fanout_over": ("relation", "union"),
    "graph.partition": ("owned", "replicated"),
    "eval.protocol": ("full", "sampled"),
    "train.sparse_optimizer": ("sgd", "adagrad", "rowwise_adagrad", "adam"),
    "train.dense_optimizer": ("adam", "adagrad", "sgd"),
    "sharding.default": (
        "auto",
        "table_wise",
        "row_wise",
        "column_wise",
        "table_row_wise",
        "data_parallel",
    ),
    "sharding.compute_kernel": ("fused", "dense"),
}


def validate(cfg: Config) -> None:
    """Value checks that types alone do not catch."""
    for dotted, choices in _CHOICES.items():
        section, name = dotted.split(".")
        v = getattr(getattr(cfg, section), name)
        if v not in choices:
            raise ConfigError(f"{dotted}: {v!r} is not one of {', '.join(choices)}")
    for t, s in cfg.sharding.tables.items():
        if s not in _CHOICES["sharding.default"][1:]:  # a table is pinned to a type, not auto
            raise ConfigError(
                f"sharding.tables.{t}: {s!r} is not one of "
                f"{', '.join(_CHOICES['sharding.default'][1:])}"
            )
    if cfg.data.batch_size <= 0:
        raise ConfigError(f"data.batch_size: must be positive, got {cfg.data.batch_size}")
    if cfg.train.epochs < 0:
        raise ConfigError(f"train.epochs: must be >= 0, got {cfg.train.epochs}")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
