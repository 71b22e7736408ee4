"""CIGF model: MESI gates, gradients to every table, sampled == full, separable scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distrec.config import load_config
from distrec.data.bundle import Bundle
from distrec.models.cigf import build_data, build_model
from distrec.models.cigf.heads import Bilinear, Mesi, SharedMmoe

BEHAVIORS = ("view", "cart", "fav", "buy")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(
        tmp_path_factory.mktemp("cigf") / "b", users=30, items=24, behaviors=BEHAVIORS, seed=3
    )


def make(bundle: Path, *overrides: str, world: int = 1, rank: int = 0):
    cfg = load_config(
        "cigf",
        None,
        [f"data.bundle={bundle}", "data.batch_size=32", "data.prefetch=0", "graph.layers=3",
         "model.embedding_dim=8", *overrides],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, Bundle(bundle).manifest, torch.device("cpu"))
    return cfg, model, build_data(cfg, str(bundle), rank, world)


def test_mesi_gates_sum_to_one_and_every_expert_gets_gradient() -> None:
    torch.manual_seed(0)
    k, b, d = 4, 6, 5
    head = Mesi(d, k, gate_per_task=True)
    for task in range(k):
        x = torch.randn(k, b, d, requires_grad=True)
        y = torch.randn(k, b, d, requires_grad=True)
        g = head.gates(x, y, task)
        torch.testing.assert_close(g.sum(-1), torch.ones(b))
        assert (g > 0).all()
        head(x, y, task).sum().backward()
        for j in range(k):  # expert j = x_j o y_j receives gradient through its gate share
            assert x.grad[j].abs().sum() > 0 and y.grad[j].abs().sum() > 0
        assert head.w_user.grad[task].abs().sum() > 0  # the task's own gate net trains
        head.zero_grad()


@pytest.mark.parametrize("head_cls", [Mesi, Bilinear, SharedMmoe])
def test_full_ranking_matrix_matches_pairwise_scores(head_cls: type) -> None:
    torch.manual_seed(0)
    head = head_cls(5, 3)
    for p in head.parameters():
        p.data.normal_()
    x, y = torch.randn(3, 4, 5), torch.randn(3, 7, 5)
    pairwise = head(x[:, :, None], y[:, None], 2)  # [B, N] via broadcasting
    torch.testing.assert_close(head.matrix(x, y, 2), pairwise, rtol=1e-5, atol=1e-6)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", [[], ["model.head=bilinear", "model.cigcn=false"],
                                     ["model.head=mmoe"], ["model.attention=global"]])  # fmt: skip
def test_every_table_and_parameter_gets_gradient(bundle: Path, variant: list[str]) -> None:
    _, model, data = make(bundle, *variant)
    batch = next(iter(data.train_batches(0)))
    assert batch.dense["pos"].shape == (4, batch.size)
    loss, terms = model(batch)
    assert set(terms) == {f"bpr.{b}" for b in BEHAVIORS} | {"reg"}
    loss.backward()
    grads = _grads(model)
    tables = model.ebc.embedding_bags
    assert tables["user"].weight.grad.abs().sum() > 0
    assert tables["item"].weight.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert name in grads and grads[name].abs().sum() > 0, f"{name} got no gradient"
        assert p.grad.isfinite().all()


def test_sampled_with_unlimited_fanout_matches_full(bundle: Path) -> None:
    _, full, full_data = make(bundle)
    _, samp, samp_data = make(bundle, "graph.mode=sampled")
    samp.load_state_dict(full.state_dict())
    for step, (bf, bs) in enumerate(zip(full_data.train_batches(0), samp_data.train_batches(0))):
        assert bs.sparse["ebc"]["user"].values().numel() <= full.num_users
        lf, tf = full(bf)
        ls, ts = samp(bs)
        torch.testing.assert_close(ls, lf, rtol=1e-5, atol=1e-6)
        for key in tf:
            torch.testing.assert_close(ts[key], tf[key], rtol=1e-5, atol=1e-6)
        lf.backward()
        ls.backward()
        gf, gs = _grads(full), _grads(samp)
        for name in gf:
            torch.testing.assert_close(gs[name], gf[name], rtol=1e-4, atol=1e-6)
        full.zero_grad()
        samp.zero_grad()
        if step == 1:
            break
    full.eval()
    samp.eval()
    full.prepare_eval()
    samp.prepare_eval()
    qf = next(iter(full_data.eval_queries("valid")))
    qs = next(iter(samp_data.eval_queries("valid")))
    torch.testing.assert_close(samp.query(qs.batch), full.query(qf.batch), rtol=1e-5, atol=1e-6)
    items = torch.arange(10)
    torch.testing.assert_close(
        samp.item_reps(samp_data.item_batch(items)),
        full.item_reps(full_data.item_batch(items)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_capped_fanout_bounds_rows_and_trains(bundle: Path) -> None:
    _, model, data = make(bundle, "graph.mode=sampled", "graph.fanout=[2,2,1]", "data.batch_size=4")
    batch = next(iter(data.train_batches(0)))
    rows, beh = batch.dense["adj_rows"], batch.dense["adj_beh"]
    per_row = torch.bincount(rows * 4 + beh)
    assert per_row.max() <= 2  # no row keeps more than the largest fanout per behavior
    assert rows.numel() < sum(a.nnz for a in data.adjs)  # fewer edges than the whole graph
    loss, _ = model(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.ebc.embedding_bags["item"].weight.grad.abs().sum() > 0


def test_rank_slices_form_the_one_rank_batch(bundle: Path) -> None:
    _, _, one = make(bundle)
    parts = [make(bundle, world=2, rank=r)[2] for r in range(2)]
    b1 = next(iter(one.train_batches(1)))
    b2 = [next(iter(p.train_batches(1))) for p in parts]

    def samples(*bs) -> list[tuple[float, ...]]:  # noqa: ANN002 - one column per sample
        cols = [torch.cat([b.dense["user"][None].float() for b in bs], dim=-1)]
        cols += [
            torch.cat([b.dense[k].float() for b in bs], dim=-1) for k in ("pos", "neg", "mask")
        ]
        return sorted(map(tuple, torch.cat(cols).T.tolist()))

    # the same samples, negatives and masks; the order within the global batch differs
    assert samples(*b2) == samples(b1)


def test_mask_marks_users_without_the_behavior(bundle: Path) -> None:
    _, model, data = make(bundle)
    batch = next(iter(data.train_batches(0)))
    m = model.num_users
    users = batch.dense["user"].numpy()
    for k, b in enumerate(data.model_behaviors):
        train = data.bundle.graph(f"ui.{b}")
        has = train.degrees()[users] > 0
        np.testing.assert_array_equal(batch.dense["mask"][k].numpy() > 0, has)
        pos = batch.dense["pos"][k].numpy() - m
        neg = batch.dense["neg"][k].numpy() - m
        assert train.contains(users[has], pos[has]).all()
        assert not train.contains(users, neg).any()


def test_sampled_protocol_draws_one_target_and_unbought_negatives(bundle: Path) -> None:
    _, _, data = make(bundle, "eval.protocol=sampled", "model.sampled_eval_negatives=5")
    q = next(iter(data.eval_queries("test")))
    assert q.candidates is not None
    for u, t, c in zip(q.ids.tolist(), q.targets, q.candidates, strict=True):
        assert len(t) == 1 and c[0] == t[0] and len(c) == 6
        bought = set(data.target_train.row(u)[0]) | set(data.heldout("valid").row(u)[0])
        bought |= set(data.heldout("test").row(u)[0])
        assert not (set(c[1:]) & bought)


def test_unit_gate_input_makes_the_gate_independent_of_the_norm() -> None:
    """``gate_input="unit"``: scaling the representations leaves the gates unchanged (the raw
    gate of eq. 15 sharpens instead), and the full-ranking path agrees with the pairwise one."""
    torch.manual_seed(0)
    k, b, d = 3, 4, 6
    x, y = torch.randn(k, b, d), torch.randn(k, b, d)
    raw, unit = Mesi(d, k), Mesi(d, k, gate_input="unit")
    unit.load_state_dict(raw.state_dict())
    torch.testing.assert_close(unit.gates(10 * x, 10 * y, 2), unit.gates(x, y, 2))
    sharp = raw.gates(10 * x, 10 * y, 2).max(-1).values
    assert (sharp > raw.gates(x, y, 2).max(-1).values).all()
    yn = torch.randn(k, 5, d)
    pairwise = unit(x[:, :, None], yn[:, None], 2)
    torch.testing.assert_close(unit.matrix(x, yn, 2), pairwise, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="model.gate_input"):
        Mesi(d, k, gate_input="softmax")
