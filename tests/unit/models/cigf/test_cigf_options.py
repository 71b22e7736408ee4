"""CIGF options taken from the authors' code (score scale, left normalisation) and the
VCGAE-style metrics used to compare with the published JD figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distrec.config import load_config
from distrec.data.bundle import Bundle
from distrec.models.cigf import build_data, build_model
from distrec.models.cigf.graph import row_normalise
from research.cigf_vcgae_metrics import metrics_from_hits
from tests.unit.models.cigf.test_cigf_propagation import tiny_graphs


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(
        tmp_path_factory.mktemp("cigfopt") / "b",
        users=20,
        items=16,
        behaviors=("pv", "buy"),
        seed=5,
    )


def _model(bundle: Path, *overrides: str):
    cfg = load_config(
        "cigf",
        None,
        [f"data.bundle={bundle}", "data.batch_size=16", "data.prefetch=0", "graph.layers=2",
         "model.embedding_dim=4", *overrides],
    )  # fmt: skip
    torch.manual_seed(0)
    return build_model(cfg, Bundle(bundle).manifest, torch.device("cpu")), build_data(
        cfg, str(bundle), 0, 1
    )


def test_row_normalise_averages_neighbours() -> None:
    for adj in tiny_graphs():
        left = row_normalise(adj)
        dense = torch.from_numpy(left.to_scipy().toarray())
        sums = dense.sum(1)
        nonempty = torch.from_numpy(adj.degrees() > 0)
        torch.testing.assert_close(
            sums[nonempty], torch.ones(int(nonempty.sum()), dtype=sums.dtype)
        )
        assert (sums[~nonempty] == 0).all()
        np.testing.assert_array_equal(left.indices, adj.indices)  # same edges


def test_left_norm_changes_the_graph_and_score_scale_only_the_loss(bundle: Path) -> None:
    # replicated: the model then holds the whole graphs, whose weights the test compares
    rep = "graph.partition=replicated"
    base, data = _model(bundle, rep)
    left, _ = _model(bundle, rep, "model.norm=left")
    scaled, _ = _model(bundle, rep, "model.score_scale=300")
    batch = next(iter(data.train_batches(0)))
    w_base = base._adjs_cpu[0].weights
    w_left = left._adjs_cpu[0].weights
    assert not np.allclose(w_base, w_left)
    loss_b, terms_b = base(batch)
    loss_s, terms_s = scaled(batch)  # same seed, same init: only the BPR temperature differs
    assert not torch.allclose(terms_b["bpr.buy"], terms_s["bpr.buy"])
    torch.testing.assert_close(terms_b["reg"], terms_s["reg"])
    for m in (base, scaled):
        m.eval()
        m.prepare_eval()
    torch.testing.assert_close(base._cache, scaled._cache)  # ranking is unaffected


def test_bad_norm_is_an_error_naming_the_key(bundle: Path) -> None:
    with pytest.raises(ValueError, match="model.norm"):
        _model(bundle, "model.norm=right")


def test_ngcf_ndcg_uses_the_hits_as_ideal() -> None:
    # user 0: one hit at rank 3 out of 4 test items; user 1: no hit
    hits = np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
    res = metrics_from_hits(hits, np.array([4, 1]), [5])
    assert res["hr@5"] == pytest.approx(0.5)
    assert res["recall@5"] == pytest.approx(0.125)
    assert res["ngcf_ndcg@5"] == pytest.approx(0.5 * (1 / np.log2(4)))
    ideal = sum(1 / np.log2(r + 2) for r in range(4))
    assert res["ndcg@5"] == pytest.approx(0.5 * (1 / np.log2(4)) / ideal)


def test_attention_bias_sets_the_starting_mix() -> None:
    from distrec.models.cigf.attention import BehaviorAttention

    ego = torch.zeros(7, 4)  # zero embeddings: alpha = LeakyReLU(b) exactly
    for b, want in ((0.0, 0.0), (1.0, 1.0)):
        att = BehaviorAttention(4, 3, layers=3, bias_init=b)
        torch.testing.assert_close(att(ego), torch.full((3, 2, 7, 3), want))


def test_sampled_lookup_stride_is_the_steps_real_maximum(bundle: Path) -> None:
    # the stride is the step's real maximum, not the worst-case bound; without a process group
    # each rank pads to its own (under torchrun to_batch takes the maximum over the ranks:
    # tests/distributed/test_data_plane.py checks they agree)
    for rank in range(2):
        strides: dict[int, set[int]] = {}
        counts: dict[int, list[int]] = {}
        cfg = load_config(
            "cigf",
            None,
            [f"data.bundle={bundle}", "data.batch_size=4", "data.prefetch=0", "graph.layers=2",
             "graph.mode=sampled", "graph.fanout=[1]", "model.embedding_dim=4"],
        )  # fmt: skip
        data = build_data(cfg, str(bundle), rank, 2)
        for step, b in enumerate(data.train_batches(0)):
            kjt = b.sparse["ebc"]
            nu, ni = (int(v) for v in b.dense["n_nodes"])
            assert kjt.stride() >= max(nu, ni)
            strides.setdefault(step, set()).add(kjt.stride())
            counts.setdefault(step, []).extend([nu, ni])
        assert all(strides[s] == {max(counts[s])} for s in strides)


def test_gate_l2_adds_the_penalty_on_the_gate_weights_only(bundle: Path) -> None:
    base, data = _model(bundle)
    pen, _ = _model(bundle, "model.gate_l2=0.5")
    batch = next(iter(data.train_batches(0)))
    _, terms_b = base(batch)
    loss, terms_p = pen(batch)  # same seed, same init
    w = pen.head.w_user.detach().pow(2).sum() + pen.head.w_item.detach().pow(2).sum()
    torch.testing.assert_close(terms_p["reg"] - terms_b["reg"], 0.5 * w)
    torch.testing.assert_close(terms_p["bpr.buy"], terms_b["bpr.buy"])
    loss.backward()
    assert pen.head.w_user.grad is not None and pen.head.w_user.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="model.gate_l2"):
        _model(bundle, "model.gate_l2=-1")
