"""TorchRec's planner under distrec's constraints (planning only: tables stay on ``meta``).

No process group is needed: :func:`plan_sharding` runs the planner in this process, as rank 0
does under :func:`distrec.distributed.sharding.shard_model`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from distrec.config import Config, ConfigError
from distrec.distributed.sharding import plan_sharding, table_constraints

CPU = torch.device("cpu")
GIB = 2**30


class TwoTower(nn.Module):
    """A user/item EBC (pooled lookups) and an item-sequence EC, all on ``meta``."""

    def __init__(self, users: int, items: int = 1000, dim: int = 64, seq_dim: int = 32) -> None:
        super().__init__()
        meta = torch.device("meta")
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name="user", embedding_dim=dim, num_embeddings=users, feature_names=["u"]
                ),
                EmbeddingBagConfig(
                    name="item", embedding_dim=dim, num_embeddings=items, feature_names=["i"]
                ),
            ],
            device=meta,
        )
        self.ec = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name="seq", embedding_dim=seq_dim, num_embeddings=items, feature_names=["s"]
                )
            ],
            device=meta,
        )


def _cfg(**sharding: object) -> Config:
    cfg = Config()
    cfg.data.batch_size = 2048
    for k, v in sharding.items():
        setattr(cfg.sharding, k, v)
    return cfg


def test_1e8_row_table_at_two_ranks_is_split_by_rows_with_memory_estimate() -> None:
    rows, dim = 10**8, 64
    weights = rows * dim * 4  # fp32: 25.6 GB, more than one rank's 16 GiB
    cfg = _cfg(memory_per_rank_gb=16.0)  # the default: planner, fused row-wise Adagrad
    model = TwoTower(rows, dim=dim)
    plan, summary = plan_sharding(model, cfg, 2, CPU)
    user = summary.tables["user"]
    assert user.sharding_type in ("row_wise", "table_row_wise")
    assert user.source == "planned"
    assert sorted(user.ranks) == [0, 1]
    assert sum(s[0] for s in user.shards) == rows and all(s[1] == dim for s in user.shards)
    # the sharding plan DMP gets says the same
    ps = plan.plan["ebc"]["user"]  # type: ignore[index]
    assert ps.sharding_type == user.sharding_type and ps.ranks == [0, 1]
    # per-rank estimate: half the weights plus row-wise Adagrad's one float per row, per rank,
    # within the planner's share of the 16 GiB (85 %)
    assert len(summary.rank_bytes) == 2
    for b in summary.rank_bytes:
        assert weights / 2 + rows / 2 * 4 <= b <= 0.85 * 16 * GIB
    text = summary.format()
    assert "ebc.user: 100000000x64" in text and "rank 0:" in text and "rank 1:" in text
    assert model.ebc.embedding_bags["user"].weight.is_meta  # nothing was materialised
    # the optimizer hint used for the estimate does not stay on the weights (DMP would read it)
    assert not hasattr(model.ebc.embedding_bags["user"].weight, "_optimizer_classes")


def test_a_table_that_fits_nowhere_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no plan fits 2 x cpu ranks.*memory_per_rank_gb"):
        plan_sharding(TwoTower(10**8), _cfg(memory_per_rank_gb=4.0), 2, CPU)


def test_per_table_setting_overrides_the_planner() -> None:
    cfg = _cfg(memory_per_rank_gb=16.0, tables={"user": "column_wise", "item": "table_row_wise"})
    cfg.train.sparse_optimizer = "adagrad"
    _, summary = plan_sharding(TwoTower(10**6), cfg, 2, CPU)
    user, item = summary.tables["user"], summary.tables["item"]
    assert (user.sharding_type, user.source) == ("column_wise", "set")
    assert user.shards == [[10**6, 32], [10**6, 32]] and sorted(user.ranks) == [0, 1]
    assert (item.sharding_type, item.source) == ("table_row_wise", "set")
    assert summary.tables["seq"].source == "planned"


def test_default_type_pins_every_table_and_is_placed_by_the_planner() -> None:
    _, summary = plan_sharding(TwoTower(5000), _cfg(default="table_wise"), 2, CPU)
    assert {t.sharding_type for t in summary.tables.values()} == {"table_wise"}
    # the planner balances the three tables over both ranks (not table i on rank i % W)
    assert {r for t in summary.tables.values() for r in t.ranks} == {0, 1}


@pytest.mark.parametrize("kernel", ["fused", "dense"])
def test_small_tables_never_go_data_parallel_where_that_changes_training(kernel: str) -> None:
    # tiny tables: data_parallel is the planner's first choice when it is allowed
    model = TwoTower(100, items=50, dim=8, seq_dim=8)
    model.ec = nn.Module()  # the EC needs the fused kernel on CPU: checked separately below
    cfg = _cfg(compute_kernel=kernel)
    _, summary = plan_sharding(model, cfg, 2, CPU)
    types = {t.sharding_type for t in summary.tables.values()}
    # fused: a DP table would ignore the fused optimizer -> never planned; dense: same optimizer
    assert ("data_parallel" in types) == (kernel == "dense")
    assert {t.compute_kernel for t in summary.tables.values()} == {kernel}


def test_embedding_collection_never_data_parallel_nor_table_row_wise() -> None:
    model = TwoTower(100, items=50, dim=8, seq_dim=8)
    _, summary = plan_sharding(model, _cfg(), 2, CPU)
    assert summary.tables["seq"].sharding_type in ("table_wise", "row_wise", "column_wise")
    for st in ("data_parallel", "table_row_wise"):
        with pytest.raises(ConfigError, match=f"sharding.tables.seq: {st}"):
            plan_sharding(model, _cfg(tables={"seq": st}), 2, CPU)


def test_column_wise_not_planned_with_row_wise_adagrad() -> None:
    """A column shard keeps its own per-row accumulator: another optimizer than one rank's."""
    model = TwoTower(10**8, dim=64)
    cfg = _cfg(memory_per_rank_gb=16.0)
    for opt, allowed in (("rowwise_adagrad", False), ("adagrad", True)):
        cfg.train.sparse_optimizer = opt
        cons, _ = table_constraints(model, cfg, 2, CPU)
        assert ("column_wise" in (cons["user"].sharding_types or [])) == allowed, opt


def test_fused_adam_refused_on_cpu_allowed_on_cuda_topology() -> None:
    cfg = _cfg(memory_per_rank_gb=80.0)
    cfg.train.sparse_optimizer = "adam"
    with pytest.raises(ConfigError, match="fused adam is not supported on CPU"):
        plan_sharding(TwoTower(1000), cfg, 2, CPU)
    # planning for CUDA ranks needs no GPU when their memory is given
    _, summary = plan_sharding(TwoTower(10**7), cfg, 2, torch.device("cuda", 0))
    assert summary.device == "cuda" and sum(summary.rank_bytes) > 10**7 * 64 * 4


def test_unknown_table_names_the_tables() -> None:
    with pytest.raises(ConfigError, match="sharding.tables.nope: no such table; tables: item"):
        plan_sharding(TwoTower(100), _cfg(tables={"nope": "row_wise"}), 2, CPU)


def test_dense_kernel_on_model_parallel_tables() -> None:
    """sharding.compute_kernel=dense (ordinary parameters, any dense optimizer) on row_wise tables,
    as the graph models' configs use: TorchRec's planner pairs dense with data_parallel only."""
    model = TwoTower(10**6)
    model.ec = nn.Module()
    plan, summary = plan_sharding(model, _cfg(default="row_wise", compute_kernel="dense"), 2, CPU)
    for name in ("user", "item"):
        assert plan.plan["ebc"][name].compute_kernel == "dense"  # type: ignore[index]
        assert plan.plan["ebc"][name].sharding_type == "row_wise"  # type: ignore[index]
        assert summary.tables[name].compute_kernel == "dense"
