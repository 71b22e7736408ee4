"""Normalised adjacency: bundle graphs, recomputed normalisation, fallback to interactions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.graph.adjacency import (
    HeteroGraph,
    Relation,
    bipartite_from_bundle,
    row_normalized,
    sym_normalized,
    to_torch,
)
from tests.helpers.bundles import write_tiny_bundle


def test_bundle_graph_weights_are_symmetric_normalisation(tiny_bundle: Path) -> None:
    g = bipartite_from_bundle(Bundle(tiny_bundle))
    ui, iu = (r.adj for r in g.relations)
    assert g.num_nodes == {"user": 40, "item": 30}
    np.testing.assert_allclose(sym_normalized(ui).weights, ui.weights, rtol=1e-6)
    # iu is ui^T with the same weights: compare as dense matrices
    dense_ui = to_torch(ui).to_dense()
    torch.testing.assert_close(to_torch(iu).to_dense(), dense_ui.T)
    # symmetric normalisation: D_u^-1/2 A D_i^-1/2 with degrees of the binary matrix
    a = (dense_ui > 0).double()
    du, di = a.sum(1), a.sum(0)
    expect = a / torch.sqrt(du[:, None].clamp(min=1) * di[None, :].clamp(min=1))
    torch.testing.assert_close(dense_ui.double(), expect, rtol=1e-6, atol=1e-7)


def test_fallback_builds_graph_from_train_interactions(tmp_path: Path) -> None:
    root = write_tiny_bundle(tmp_path / "b", users=25, items=20, per_user=6)
    want = bipartite_from_bundle(Bundle(root))
    manifest = json.loads((root / "_manifest.json").read_text())
    manifest["tables"] = {
        k: v for k, v in manifest["tables"].items() if not k.startswith("graphs/")
    }
    (root / "_manifest.json").write_text(json.dumps(manifest))
    got = bipartite_from_bundle(Bundle(root))
    for r_got, r_want in zip(got.relations, want.relations, strict=True):
        assert (r_got.name, r_got.src, r_got.dst) == (r_want.name, r_want.src, r_want.dst)
        torch.testing.assert_close(to_torch(r_got.adj).to_dense(), to_torch(r_want.adj).to_dense())


def test_row_normalized_rows_sum_to_one() -> None:
    a = Csr.from_pairs(np.array([0, 0, 0, 2]), np.array([1, 2, 3, 0]), 3, 4)
    w = to_torch(row_normalized(a)).to_dense().sum(1)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.0, 1.0]))


def test_heterograph_rejects_mismatched_sizes() -> None:
    a = Csr.from_pairs(np.array([0]), np.array([1]), 3, 4)
    with pytest.raises(ValueError, match="relation ui: dst side has 4 rows but item has 5"):
        HeteroGraph({"user": 3, "item": 5}, [Relation("ui", "user", "item", a)])
    with pytest.raises(ValueError, match="unknown node type 'group'"):
        HeteroGraph({"user": 3, "item": 4}, [Relation("ug", "user", "group", a)])
