"""Full and sampled propagation: exactness, sampled == full with unlimited fanout, unbiasedness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.data.csr import Csr
from distrec.graph.adjacency import (
    HeteroGraph,
    Relation,
    bipartite_graph,
    row_normalized,
    sym_normalized,
    to_torch,
)
from distrec.graph.propagate import combine_layers, propagate_blocks, propagate_full
from distrec.graph.sampler import Blocks, sample_blocks


def random_bipartite(users: int, items: int, edges: int, seed: int = 0) -> HeteroGraph:
    rng = np.random.default_rng(seed)
    ui = Csr.from_pairs(rng.integers(0, users, edges), rng.integers(0, items, edges), users, items)
    return bipartite_graph(sym_normalized(ui))


def with_groups(g: HeteroGraph, groups: int, seed: int = 1) -> HeteroGraph:
    """Adds user<->group membership relations (row-normalised) to a user-item graph."""
    rng = np.random.default_rng(seed)
    users = g.num_nodes["user"]
    gu = row_normalized(
        Csr.from_pairs(
            rng.integers(0, groups, 3 * groups), rng.integers(0, users, 3 * groups), groups, users
        )
    )
    ug = row_normalized(gu.transpose())
    return HeteroGraph(
        {**g.num_nodes, "group": groups},
        [*g.relations, Relation("gu", "group", "user", gu), Relation("ug", "user", "group", ug)],
    )


def tables(g: HeteroGraph, dim: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        t: torch.randn(n, dim, generator=gen, dtype=torch.float64).requires_grad_()
        for t, n in g.num_nodes.items()
    }


def test_full_matches_dense_matrix_powers() -> None:
    g = random_bipartite(12, 9, 40)
    emb = tables(g)
    ui = to_torch(g.relations[0].adj).to_dense().double()
    # LightGCN's adjacency [[0, R], [R^T, 0]] over users then items
    a = torch.zeros(21, 21, dtype=torch.float64)
    a[:12, 12:], a[12:, :12] = ui, ui.T
    x = torch.cat([emb["user"], emb["item"]])
    layers = propagate_full(g, emb, 3)
    for k, layer in enumerate(layers):
        want = torch.linalg.matrix_power(a, k) @ x
        torch.testing.assert_close(torch.cat([layer["user"], layer["item"]]), want)
    mean = combine_layers(layers)
    torch.testing.assert_close(mean["user"], sum(lay["user"] for lay in layers) / 4)


@pytest.mark.parametrize("groups", [0, 5])
def test_sampled_unlimited_fanout_equals_full(groups: int) -> None:
    g = random_bipartite(30, 25, 120, seed=3)
    g = with_groups(g, groups) if groups else g
    emb = tables(g)
    seeds = {"user": np.array([0, 4, 4, 17, 29]), "item": np.array([3, 24, 3, 0])}
    if groups:
        seeds["group"] = np.array([1, 2])
    blocks = sample_blocks(seeds, g, layers=3, fanout=[-1, 0], rng=np.random.default_rng(0))
    rows = {t: emb[t][ids] for t, ids in blocks.input_nodes().items()}
    sampled = combine_layers(propagate_blocks(blocks, rows))
    full = combine_layers(propagate_full(g, emb, 3))
    weight = {t: torch.randn(len(s), 8, dtype=torch.float64) for t, s in seeds.items()}

    def loss(out: dict[str, torch.Tensor], index: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum((out[t][index[t]] * weight[t]).sum() for t in seeds)  # type: ignore[return-value]

    full_idx = {t: torch.as_tensor(s) for t, s in seeds.items()}
    for t in seeds:
        torch.testing.assert_close(sampled[t][blocks.seed_index[t]], full[t][full_idx[t]])
    g_full = torch.autograd.grad(loss(full, full_idx), list(emb.values()))
    g_sampled = torch.autograd.grad(loss(sampled, blocks.seed_index), list(emb.values()))
    for a, b in zip(g_full, g_sampled, strict=True):
        torch.testing.assert_close(a, b)
    assert any(x.abs().sum() > 0 for x in g_full)


def test_fanout_caps_neighbours_and_estimate_is_unbiased() -> None:
    g = random_bipartite(20, 15, 150, seed=5)
    emb = {t: x.detach() for t, x in tables(g, dim=4).items()}
    seeds = {"user": np.arange(20)}
    exact = propagate_full(g, emb, 2)
    rng = np.random.default_rng(7)
    acc = [torch.zeros(20, 4, dtype=torch.float64) for _ in range(2)]
    trials = 1500
    for _ in range(trials):
        b = sample_blocks(seeds, g, layers=2, fanout=[2, 3], rng=rng)
        for k, cap in enumerate([2, 3]):
            for e in b.blocks[k].values():
                assert torch.bincount(e.rows).max() <= cap
        layers = propagate_blocks(b, {t: emb[t][ids] for t, ids in b.input_nodes().items()})
        for k in range(2):
            acc[k] += layers[k + 1]["user"]
    for k in range(2):
        est, want = acc[k] / trials, exact[k + 1]["user"]
        one_sample = layers[k + 1]["user"]
        # averaged estimate is close; a single sample is clearly not (the cap was active)
        err = (est - want).norm() / want.norm()
        assert err < 0.08, f"layer {k + 1}: relative error {err:.3f}"
        assert (one_sample - want).norm() / want.norm() > 3 * err


def test_blocks_dense_roundtrip_and_seed_index() -> None:
    g = random_bipartite(10, 8, 30)
    b = sample_blocks({"user": np.array([3, 1, 3]), "item": np.array([2])}, g, 2, [2, 2])
    assert b.frontiers[0]["user"].tolist() == [1, 3]
    assert b.seed_index["user"].tolist() == [1, 0, 1]
    for k in range(2):  # frontier k is a prefix of frontier k+1
        for t, ids in b.frontiers[k].items():
            assert b.frontiers[k + 1][t][: len(ids)].tolist() == ids.tolist()
    rels = {r.name: (r.src, r.dst) for r in g.relations}
    back = Blocks.from_dense(b.to_dense("x"), rels, "x")
    emb = {t: torch.randn(n, 3) for t, n in g.num_nodes.items()}
    rows = {t: emb[t][ids] for t, ids in b.input_nodes().items()}
    for x, y in zip(propagate_blocks(b, rows), propagate_blocks(back, rows), strict=True):
        for t in x:
            torch.testing.assert_close(x[t], y[t])


def test_seed_out_of_range_is_an_error() -> None:
    g = random_bipartite(10, 8, 30)
    with pytest.raises(ValueError, match="seed ids of 'item' out of range"):
        sample_blocks({"item": np.array([8])}, g, 1)


def test_node_samples_do_not_depend_on_the_other_seeds() -> None:
    """Two ranks holding different slices of a global batch draw the same neighbours per node."""
    g = random_bipartite(40, 30, 400, seed=2)

    def neighbours(seeds: np.ndarray) -> dict[int, set[int]]:
        b = sample_blocks({"user": seeds}, g, 1, [3], rng=np.random.default_rng([9, 0, 4]))
        e, f1 = b.blocks[0]["ui"], b.frontiers[1]["item"]
        out: dict[int, set[int]] = {}
        for r, c in zip(e.rows.tolist(), e.cols.tolist(), strict=True):
            out.setdefault(int(b.frontiers[0]["user"][r]), set()).add(int(f1[c]))
        return out

    both = neighbours(np.arange(0, 40))
    left, right = neighbours(np.arange(0, 20)), neighbours(np.arange(20, 40))
    assert both == {**left, **right}
    assert max(len(v) for v in both.values()) == 3
