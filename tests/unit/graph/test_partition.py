"""Node ownership (TorchRec row-wise blocks) and owned full mode at one rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchrec.distributed.sharding_plan import _calculate_rw_shard_sizes_and_offsets

from distrec.data.bundle import Bundle
from distrec.graph.adjacency import bipartite_from_bundle
from distrec.graph.partition import NodePartition
from distrec.models.api import Batch
from distrec.models.lightgcn.data import lookup_kjt
from distrec.models.lightgcn.model import LightGCN, LightGCNConfig
from tests.helpers.bundles import write_tiny_bundle


@pytest.mark.parametrize(("n", "world"), [(10, 4), (5, 4), (7, 3), (1, 2), (100, 1), (9, 3)])
def test_ranges_are_torchrec_row_wise_shards(n: int, world: int) -> None:
    sizes, offsets = _calculate_rw_shard_sizes_and_offsets(n, world, 8)
    part = NodePartition({"t": n}, world)
    for r in range(world):
        lo, hi = part.range("t", r)
        assert (lo, hi - lo) == (offsets[r][0], sizes[r][0])
    ids = torch.arange(n)
    owners = part.owner("t", ids)
    for r in range(world):
        lo, hi = part.range("t", r)
        assert bool((owners[lo:hi] == r).all())


def test_flat_space_local_positions() -> None:
    parts = [NodePartition({"user": 7, "item": 5, "group": 3}, 3, r) for r in range(3)]
    total = 15
    flat = torch.arange(total)
    owner, pos = parts[0].flat_local(flat)
    for r, p in enumerate(parts):
        mine = p.local_flat_ids()
        assert len(mine) == p.num_local[r]
        # the owner's local row of each of its flat ids is its position in local_flat_ids
        assert bool((owner[mine] == r).all())
        assert pos[mine].tolist() == list(range(len(mine)))
    assert sorted(torch.cat([p.local_flat_ids() for p in parts]).tolist()) == list(range(total))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("own") / "b", users=30, items=20, per_user=6)


def _batch(g, users: int, items: int) -> Batch:
    gen = torch.Generator().manual_seed(3)
    dense = {
        "user_idx": torch.randint(0, users, (16,), generator=gen),
        "pos_idx": torch.randint(0, items, (16,), generator=gen),
        "neg_idx": torch.randint(0, items, (16, 2), generator=gen),
        "lookup_n": torch.tensor([users, items]),
    }
    kjt = lookup_kjt(torch.arange(users), torch.arange(items))
    return Batch(sparse={"ebc": kjt}, dense=dense, size=16)


def test_owned_full_mode_equals_replicated_at_one_rank(bundle: Path) -> None:
    g = bipartite_from_bundle(Bundle(bundle))
    models = {}
    for p in ("owned", "replicated"):
        torch.manual_seed(0)
        models[p] = LightGCN(LightGCNConfig(dim=8), g, layers=2, l2=1e-3, partition=p)
    batch = _batch(g, g.num_nodes["user"], g.num_nodes["item"])
    out = {}
    for p, m in models.items():
        loss, terms = m(batch)
        out[p] = (loss, terms, torch.autograd.grad(loss, list(m.parameters())))
    torch.testing.assert_close(out["owned"][0], out["replicated"][0])
    torch.testing.assert_close(out["owned"][1]["reg"], out["replicated"][1]["reg"])
    for a, b in zip(out["owned"][2], out["replicated"][2], strict=True):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0
    for m in models.values():
        m.eval()
        m.prepare_eval()
    assert set(models["owned"]._cache) == {"local"}  # type: ignore[arg-type]
    q = _batch(g, 5, 7)
    torch.testing.assert_close(models["owned"].query(q), models["replicated"].query(q))
    torch.testing.assert_close(models["owned"].item_reps(q), models["replicated"].item_reps(q))


@pytest.mark.parametrize("variant", [[], ["model.cigcn=false"]])
def test_cigf_owned_full_mode_equals_replicated_at_one_rank(
    tmp_path_factory: pytest.TempPathFactory, variant: list[str]
) -> None:
    from distrec.config import load_config
    from distrec.models.cigf import build_data, build_model

    b = write_tiny_bundle(
        tmp_path_factory.mktemp("cigf_own") / "b", users=30, items=24,
        behaviors=("view", "cart", "buy"), seed=3,
    )  # fmt: skip
    out = {}
    for p in ("owned", "replicated"):
        over = [f"data.bundle={b}", "data.batch_size=32", "data.prefetch=0", "graph.layers=3",
                "model.embedding_dim=8", f"graph.partition={p}", *variant]  # fmt: skip
        cfg = load_config("cigf", None, over)
        torch.manual_seed(0)
        model = build_model(cfg, Bundle(b).manifest, torch.device("cpu"))
        batch = next(iter(build_data(cfg, str(b), 0, 1).train_batches(0)))
        loss, terms = model(batch)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        model.eval()
        model.prepare_eval()
        q = Batch(sparse={"ebc": lookup_kjt(torch.arange(30), torch.arange(24))})
        out[p] = (loss, grads, model.query(q), model.item_reps(q))
    torch.testing.assert_close(out["owned"][0], out["replicated"][0])
    for a, c in zip(out["owned"][1], out["replicated"][1], strict=True):
        torch.testing.assert_close(a, c)
    torch.testing.assert_close(out["owned"][2], out["replicated"][2])
    torch.testing.assert_close(out["owned"][3], out["replicated"][3])


@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["model.interest_module=embedding", "model.propagate_fused_users=false"],
        ["model.member_cap=2", "model.group_item_rep=raw", "model.layer_combine=mean"],
    ],
)
def test_igrec_owned_full_mode_equals_replicated_at_one_rank(
    tmp_path_factory: pytest.TempPathFactory, variant: list[str]
) -> None:
    from distrec.config import load_config
    from distrec.data.schema import Manifest
    from distrec.models.igrec import build_data, build_model

    b = write_tiny_bundle(tmp_path_factory.mktemp("ig") / "b", users=40, items=30, groups=9)
    out = {}
    for p in ("owned", "replicated"):
        over = [f"data.bundle={b}", "data.batch_size=32", "model.dim=8", "graph.layers=2",
                f"graph.partition={p}", *variant]  # fmt: skip
        cfg = load_config("igrec", None, over)
        torch.manual_seed(0)
        model = build_model(cfg, Manifest.load(str(b)), torch.device("cpu"))
        data = build_data(cfg, str(b), 0, 1)
        batch = next(iter(data.train_batches(0)))
        loss, terms = model(batch)
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        model.eval()
        model.prepare_eval()
        ids = Batch(dense={"ids": torch.arange(40), "items": torch.arange(30)})
        gids = Batch(dense={"ids": torch.arange(9)})
        out[p] = (loss, terms, grads, model.query(ids), model.query(gids, "group"),
                  model.item_reps(ids))  # fmt: skip
    o, r = out["owned"], out["replicated"]
    torch.testing.assert_close(o[0], r[0])
    assert o[1].keys() == r[1].keys()
    for k in o[1]:
        torch.testing.assert_close(o[1][k], r[1][k])
    for a, c in zip(o[2], r[2], strict=True):
        assert (a is None) == (c is None)
        if a is not None:
            torch.testing.assert_close(a, c)
    for a, c in zip(o[3:], r[3:], strict=True):
        torch.testing.assert_close(a, c)


def test_lightgcn_build_model_reads_own_rows_and_equals_replicated(bundle: Path) -> None:
    from distrec.config import load_config
    from distrec.models.lightgcn import build_model

    out = {}
    for p in ("owned", "replicated"):
        cfg = load_config("lightgcn", None, [f"data.bundle={bundle}", "model.dim=8",
                                             "graph.layers=2", f"graph.partition={p}"])  # fmt: skip
        torch.manual_seed(0)
        m = build_model(cfg, Bundle(bundle).manifest, torch.device("cpu"))
        assert (m._graph is None) == (p == "owned")  # owned keeps no whole graph
        loss, _ = m(_batch(None, 30, 20))
        out[p] = (loss, torch.autograd.grad(loss, list(m.parameters())))
    torch.testing.assert_close(out["owned"][0], out["replicated"][0])
    for a, c in zip(out["owned"][1], out["replicated"][1], strict=True):
        torch.testing.assert_close(a, c)


def test_own_rows_reads_a_row_range_of_the_bundle_graph(bundle: Path) -> None:
    from distrec.graph.partition import own_rows

    b = Bundle(bundle)
    for name in ("ui.buy", "iu.buy"):
        full = b.graph(name)
        n = full.num_src
        for lo, hi in [(0, n), (0, 4), (4, 17), (17, n), (n, n)]:
            r = own_rows(b, name, lo, hi)
            a, c = int(full.indptr[lo]), int(full.indptr[hi])
            assert (r.num_src, r.num_dst) == (hi - lo, full.num_dst)
            assert r.indptr.tolist() == (full.indptr[lo : hi + 1] - a).tolist()
            assert r.indices.tolist() == full.indices[a:c].tolist()
            assert r.weights.tolist() == full.weights[a:c].tolist()
