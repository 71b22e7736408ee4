"""The sampler: O(fanout) draws (Floyd), union-of-relations fanout, frontier cap, expand="new",
per-node samples independent of the batch, unlimited fanout exact in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.data.csr import Csr
from distrec.graph.adjacency import HeteroGraph, Relation, sym_normalized
from distrec.graph.propagate import combine_layers, propagate_blocks, propagate_full
from distrec.graph.sampler import draw_offsets, node_keys, sample_blocks


def multi_relation(users: int = 30, items: int = 20, behaviors: int = 3, seed: int = 0):
    """users <-> items over ``behaviors`` relations (CIGF-like), plus their transposes."""
    rng = np.random.default_rng(seed)
    rels = []
    for b in range(behaviors):
        e = 60 * (b + 1)
        ui = sym_normalized(
            Csr.from_pairs(rng.integers(0, users, e), rng.integers(0, items, e), users, items)
        )
        rels += [
            Relation(f"ui{b}", "user", "item", ui),
            Relation(f"iu{b}", "item", "user", ui.transpose()),
        ]
    return HeteroGraph({"user": users, "item": items}, rels)


def test_floyd_draws_are_distinct_uniform_and_cost_only_the_fanout() -> None:
    degs = np.array([0, 2, 5, 1000, 10**9])  # a row of 10^9 is never enumerated
    slot, off, scale = draw_offsets(degs, 3, node_keys(7, np.arange(5)))
    per_row = np.bincount(slot, minlength=5)
    assert per_row.tolist() == [0, 2, 3, 3, 3]
    for r in range(5):
        o = off[slot == r]
        assert len(set(o.tolist())) == len(o) and (o < degs[r]).all() and (o >= 0).all()
    assert np.allclose(scale[slot == 3], 1000 / 3) and np.allclose(scale[slot == 1], 1.0)
    # uniform over positions: 20,000 rows of degree 10, 3 draws each
    n = 20000
    s, o, _ = draw_offsets(np.full(n, 10), 3, node_keys(1, np.arange(n)))
    freq = np.bincount(o, minlength=10) / (3 * n)
    assert np.abs(freq - 0.1).max() < 0.01


@pytest.mark.parametrize("over", ["relation", "union"])
@pytest.mark.parametrize("expand", ["all", "new"])
def test_unlimited_fanout_equals_full_in_every_mode(over: str, expand: str) -> None:
    g = multi_relation()
    gen = torch.Generator().manual_seed(0)
    emb = {t: torch.randn(n, 4, generator=gen, dtype=torch.float64) for t, n in g.num_nodes.items()}
    seeds = {"user": np.array([0, 3, 3, 7]), "item": np.array([1, 19])}
    b = sample_blocks(
        seeds, g, 2, [0, -1], np.random.default_rng(1), fanout_over=over, expand=expand
    )
    full = combine_layers(propagate_full(g, emb, 2))
    if expand == "all":
        rows = {t: emb[t][ids] for t, ids in b.input_nodes().items()}
        got = combine_layers(propagate_blocks(b, rows))
        for t in seeds:
            torch.testing.assert_close(got[t][b.seed_index[t]], full[t][torch.as_tensor(seeds[t])])
    else:  # every row sampled once; its union is the exact 2-hop subgraph
        sub = b.subgraph()
        fr = b.input_nodes()
        for name, (r, c, w) in sub.items():
            rel = next(x for x in g.relations if x.name == name)
            src, dst = fr[rel.src][r].numpy(), fr[rel.dst][c].numpy()
            assert rel.adj.contains(src, dst).all()
            expanded = np.unique(src)
            assert len(r) == int(rel.adj.degrees()[expanded].sum())  # whole rows, once each
            assert np.allclose(w.numpy(), _weights(rel.adj, src, dst))


def _weights(a: Csr, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    out = np.empty(len(src), np.float32)
    for e, (s, d) in enumerate(zip(src, dst, strict=True)):
        ids, w = a.row(int(s))
        out[e] = w[np.searchsorted(ids, d)]
    return out


def test_union_fanout_caps_draws_per_node_over_all_relations_and_is_unbiased() -> None:
    g = multi_relation(seed=3)
    seeds = {"user": np.arange(30)}
    x = torch.randn(20, 2, dtype=torch.float64)
    exact = sum(torch.sparse.mm(g.torch_adjacency()[f"ui{b}"].double(), x) for b in range(3))
    acc = torch.zeros_like(exact)
    runs = 3000
    for s in range(runs):
        b = sample_blocks(seeds, g, 1, [2], np.random.default_rng([5, s]), fanout_over="union")
        per_user = sum(
            np.bincount(b.blocks[0][f"ui{k}"].rows.numpy(), minlength=30) for k in range(3)
        )
        assert per_user.max() <= 2
        items = b.frontiers[1]["item"]
        for k in range(3):
            e = b.blocks[0][f"ui{k}"]
            acc.index_add_(0, e.rows, e.weights.double()[:, None] * x[items[e.cols]])
    mean = acc / runs
    # Monte Carlo error of 3,000 runs of a 2-of-~10 draw is a few percent of the largest entry
    assert (mean - exact).abs().max() < 0.1 * exact.abs().max()
    assert (mean - exact).abs().mean() < 0.02 * exact.abs().max()


def test_max_frontier_bounds_the_draws_of_a_hop() -> None:
    g = multi_relation(seed=4)
    b = sample_blocks(
        {"user": np.arange(30)}, g, 2, [5, 5], np.random.default_rng(0), fanout_over="union",
        max_frontier=40,
    )  # fmt: skip
    for k, blk in enumerate(b.blocks):
        for t in ("user", "item"):  # per source type: 40 draws, or one per node if more nodes
            n = len(b.frontiers[k][t]) if t in b.frontiers[k] else 0
            drawn = sum(int(e.rows.numel()) for r, e in blk.items() if b.relations[r][0] == t)
            assert drawn <= max(40, n)
    assert sum(int(e.rows.numel()) for e in b.blocks[0].values()) <= 40


@pytest.mark.parametrize("expand", ["all", "new"])
def test_slices_of_a_batch_draw_what_the_whole_batch_draws(expand: str) -> None:
    """Per-node samples depend on (rng seed, node) only: two ranks' slices see the 1-rank edges."""
    g = multi_relation(seed=5)

    def edges(users: np.ndarray) -> set[tuple[str, int, int]]:
        b = sample_blocks(
            {"user": users}, g, 2, [2, 2], np.random.default_rng([9, 1]), fanout_over="union",
            expand=expand,
        )  # fmt: skip
        out = set()
        for k, blk in enumerate(b.blocks):
            for name, e in blk.items():
                rel = next(x for x in g.relations if x.name == name)
                src = b.frontiers[k][rel.src][e.rows]
                dst = b.frontiers[k + 1][rel.dst][e.cols]
                out |= {(name, int(s), int(d)) for s, d in zip(src, dst, strict=True)}
        return out

    if expand == "all":  # block-wise: edges per hop of the slice's nodes are a subset
        whole = edges(np.arange(30))
        assert edges(np.arange(15)) | edges(np.arange(15, 30)) <= whole
    else:  # every user's own row (hop 0) is the same whatever else is in the batch

        def first_hop(users: np.ndarray) -> set[tuple[str, int, int]]:
            return {e for e in edges(users) if e[0].startswith("ui")}

        whole = first_hop(np.arange(30))
        assert first_hop(np.arange(15)) | first_hop(np.arange(15, 30)) <= whole
