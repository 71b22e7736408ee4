"""MDGR model: training step, gradients, ablation switches, scoring shapes; GRU4Rec baseline."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.models.api import Batch
from distrec.models.mdgr.config import MDGRConfig
from distrec.models.mdgr.gru4rec import GRU4Rec
from distrec.models.mdgr.model import MDGR

NUM_ITEMS = 30


def _batch(b: int = 4, max_len: int = 8, negs: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([max_len, 5, 3, 1][:b])
    hist = torch.randint(0, NUM_ITEMS, (int(lengths.sum()),), generator=g)
    pos = torch.randint(0, NUM_ITEMS, (b,), generator=g)
    neg = torch.randint(0, NUM_ITEMS, (b * negs,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["hist", "pos", "neg"],
        values=torch.cat([hist, pos, neg]),
        lengths=torch.cat([lengths, torch.ones(b, dtype=torch.long), torch.full((b,), negs)]).int(),
    )
    days = torch.rand(b, max_len, generator=g) * 30
    return Batch(sparse={"ec": kjt}, dense={"hist_days": days}, size=b)


def _cfg(**kw: object) -> MDGRConfig:
    base = MDGRConfig(
        dim=8, time_dim=4, pos_dim=4, max_len=8, interests=3, iterations=2, gat_heads=2
    )
    return dataclasses.replace(base, **kw)


def test_training_step_gives_every_parameter_a_gradient() -> None:
    torch.manual_seed(0)
    model = MDGR(_cfg(dropout=0.0), NUM_ITEMS, torch.device("cpu"))
    loss, parts = model(_batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize(
    "ablation",
    [
        {"dgc": False},
        {"weights": False},
        {"use_pos": False},
        {"use_time": False},
        {"use_pos": False, "use_time": False},
        {"aware_cycles": 1},
    ],
)
def test_ablations_train(ablation: dict) -> None:
    torch.manual_seed(0)
    model = MDGR(_cfg(**ablation), NUM_ITEMS, torch.device("cpu"))
    loss, _ = model(_batch())
    loss.backward()
    assert torch.isfinite(loss)


def test_equal_weights_ablation_has_no_weight_path() -> None:
    model = MDGR(_cfg(weights=False), NUM_ITEMS, torch.device("cpu"))
    loss, _ = model(_batch())
    loss.backward()
    assert all(p.grad is None for p in model.weights.parameters())


def test_scoring_shapes_and_candidate_consistency() -> None:
    torch.manual_seed(0)
    model = MDGR(_cfg(), NUM_ITEMS, torch.device("cpu")).eval()
    batch = _batch()
    with torch.no_grad():
        q = model.query(batch)
        items = torch.randn(NUM_ITEMS, 8)
        full = model.score(q, items)
        cands = items[:5].unsqueeze(0).expand(4, -1, -1)
        per = model.score_candidates(q, cands)
    assert full.shape == (4, NUM_ITEMS) and per.shape == (4, 5)
    assert torch.isfinite(full).all() and torch.isfinite(per).all()
    # all candidates at once == one clustering per (sequence, candidate), eq. 11 taken literally
    phi, mask, days = model._unpack(q)
    with torch.no_grad():
        for c in range(5):
            z, w, present = model._logits(phi, mask, days, cands[:, c])
            one = model._score_items(z, w, present, cands[:, c : c + 1]).squeeze(1)
            torch.testing.assert_close(per[:, c], one, atol=1e-5, rtol=1e-5)


def test_gru4rec_baseline_trains() -> None:
    torch.manual_seed(0)
    model = GRU4Rec(_cfg(), NUM_ITEMS, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batch = _batch()
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first * 0.5


def test_encoder_residual_adds_the_item_embedding() -> None:
    """model.encoder_residual (off by default, eq. 6 has none) adds p to FFN(MHA(...)); the
    same weights give phi_residual - phi_paper = p on real items and 0 on padding."""
    from distrec.models.mdgr.encoding import ItemEncoder

    torch.manual_seed(0)
    paper = ItemEncoder(8, 4, 4, 2, 0.0)
    res = ItemEncoder(8, 4, 4, 2, 0.0, residual=True)
    res.load_state_dict(paper.state_dict())
    emb = torch.randn(2, 5, 8)
    days = torch.rand(2, 5) * 10
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    diff = res(emb, days, mask) - paper(emb, days, mask)
    torch.testing.assert_close(diff, emb * mask.unsqueeze(-1))
    assert not MDGRConfig().encoder_residual
    model = MDGR(_cfg(encoder_residual=True), NUM_ITEMS, torch.device("cpu"))
    loss, _ = model(_batch())
    loss.backward()
    assert torch.isfinite(loss)


def test_item_bias_adds_the_bias_block_to_eq16() -> None:
    """model.item_bias (off by default, eq. 16 has none): the item table gets a 4-column bias
    block, the history is encoded from the first D columns only, and every score is the paper's
    score (same weights, bias block dropped) plus the block's sum; the block gets gradient."""
    assert not MDGRConfig().item_bias
    torch.manual_seed(0)
    biased = MDGR(_cfg(dropout=0.0, item_bias=True), NUM_ITEMS, torch.device("cpu"))
    paper = MDGR(_cfg(dropout=0.0), NUM_ITEMS, torch.device("cpu"))
    state = biased.state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].shape == (NUM_ITEMS, 12))
    paper.load_state_dict({**state, key: state[key][:, :8]})
    biased.eval()
    paper.eval()
    batch = _batch()
    items = torch.randn(NUM_ITEMS, 12)
    with torch.no_grad():
        qb, qp = biased.query(batch), paper.query(batch)
        torch.testing.assert_close(qb, qp)
        torch.testing.assert_close(
            biased.score(qb, items), paper.score(qp, items[:, :8]) + items[:, 8:].sum(-1)
        )
        cands = items[:5].unsqueeze(0).expand(4, -1, -1)
        torch.testing.assert_close(
            biased.score_candidates(qb, cands),
            paper.score_candidates(qp, cands[..., :8]) + cands[..., 8:].sum(-1),
        )
    biased.train()
    loss, _ = biased(_batch())
    loss.backward()
    grad = dict(biased.named_parameters())[key].grad
    assert grad is not None and grad[:, 8:].abs().sum() > 0


@pytest.mark.parametrize("item_bias", [False, True])
def test_full_ranking_scores_equal_the_per_candidate_form(item_bias: bool) -> None:
    """The [B, N] running-max path of eq. 16 equals scoring every item as a [B, C, D] candidate
    set (the form training uses)."""
    torch.manual_seed(0)
    model = MDGR(_cfg(item_bias=item_bias), NUM_ITEMS, torch.device("cpu")).eval()
    with torch.no_grad():
        q = model.query(_batch())
        phi, mask, days = model._unpack(q)
        z, w, present = model._logits(phi, mask, days, model._history_mean(phi, mask))
        items = torch.randn(NUM_ITEMS, model.ec.embedding_configs()[0].embedding_dim)
        full = model._score_items(z, w, present, items)
        per = model._score_items(z, w, present, items.unsqueeze(0).expand(4, -1, -1))
    torch.testing.assert_close(full, per)


def test_target_free_training_scores_candidates_like_full_ranking() -> None:
    """model.target_aware=false: the training logits are the full-ranking scores of the
    sample's candidates, and sampled evaluation is told to use them."""
    torch.manual_seed(0)
    model = MDGR(_cfg(target_aware=False, dropout=0.0), NUM_ITEMS, torch.device("cpu"))
    assert model.target_aware_candidates is False
    batch = _batch()
    loss, _ = model(batch)
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        kjt = batch.sparse["ec"]
        full = model.score(model.query(batch), model.item_reps(Batch(sparse={"ec": kjt})))
        assert full.shape == (4, 4)  # the 4 pos ids as the item set
