"""DisMIR single-device: every variant trains, evaluation scoring matches training scoring, the
configs load, and training beats the untrained model on the planted clusters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distrec.config import ConfigError, load_config
from distrec.data.schema import Manifest
from distrec.models.dismir import SPEC
from distrec.models.dismir.model import DisMIR
from tests.unit.models.dismir.seq_bundle import write_seq_bundle

REPO = Path(__file__).resolve().parents[4]
VARIANTS = {
    "dismir": [],
    "mir": ["model.partition_weight=0"],
    "mir_rv": [
        "model.partition_weight=0",
        "model.regularizer=routing_variance",
        "model.reg_weight=0.1",
    ],
    "mir_bf": [
        "model.partition_weight=0",
        "model.regularizer=backward_flow",
        "model.reg_weight=0.1",
    ],
    "wo_dpi": ["model.readout=mean"],
    "comirec_sa": ["model.backbone=self_attention", "model.readout=max"],
    "comirec_sa_mir": [
        "model.backbone=self_attention",
        "model.readout=max",
        "model.partition_weight=0",
    ],
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_seq_bundle(tmp_path_factory.mktemp("seq") / "b", users=80, items=40)


def _setup(bundle: Path, overrides: list[str]) -> tuple[DisMIR, object]:
    base = [
        f"data.bundle={bundle}",
        "data.batch_size=32",
        "data.eval_batch_size=8",
        "model.dim=16",
        "model.max_len=6",
        "model.num_interests=3",
        "model.partition_weight=0.5",
        "model.partition_negatives=12",
        "model.hard_candidates=4",
        "train.l2=0",
    ]
    cfg = load_config("dismir", str(REPO / "configs/dismir/gowalla.yaml"), base + overrides)
    torch.manual_seed(0)
    model = SPEC.build_model(cfg, Manifest.load(str(bundle)), torch.device("cpu"))
    return model, SPEC.build_data(cfg, str(bundle), 0, 1)


def _recall(model: DisMIR, data: object, k: int = 5) -> float:
    model.eval()
    with torch.no_grad():
        items = model.item_reps(data.item_batch(torch.arange(data.num_items)))
        hits, total = 0.0, 0
        for q in data.eval_queries("valid"):
            top = model.score(model.query(q.batch), items).topk(k, dim=1).indices
            for row, tg in zip(top.tolist(), q.targets, strict=True):
                hits += len(set(row) & set(tg)) / len(tg)
                total += 1
    model.train()
    return hits / total


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_trains_and_reports_its_losses(bundle: Path, variant: str) -> None:
    model, data = _setup(bundle, VARIANTS[variant])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = next(iter(data.train_batches(0)))
    loss, losses = model(batch)
    assert torch.isfinite(loss)
    assert ("partition" in losses) == (model.cfg.partition_weight > 0)
    if model.cfg.regularizer != "none":
        assert model.cfg.regularizer in losses
    loss.backward()
    assert model.item_weight().grad.abs().sum() > 0
    opt.step()


def test_eval_scores_equal_training_scores(bundle: Path) -> None:
    """query/item_reps/score on a training batch reproduce the scores the loss sees."""
    from distrec.models.dismir.layers import score_items

    for variant in ("dismir", "comirec_sa"):
        model, data = _setup(bundle, VARIANTS[variant])
        batch = next(iter(data.train_batches(0)))
        kjt = batch.sparse["ec"]
        emb = {k: model.item_weight()[kjt[k].values()] for k in kjt.keys()}  # plain indexing
        q = model.interests(emb, batch)[0]
        s_train = score_items(q, emb["pos"].unsqueeze(1), model.cfg.readout).squeeze(1)
        pos = kjt["pos"].values()
        items = model.item_reps(data.item_batch(torch.arange(data.num_items)))
        s_eval = model.score(model.query(batch), items)
        torch.testing.assert_close(s_eval.gather(1, pos.unsqueeze(1)).squeeze(1), s_train)


def test_training_beats_the_untrained_model(bundle: Path) -> None:
    model, data = _setup(bundle, [])
    before = _recall(model, data)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for epoch in range(6):
        for batch in data.train_batches(epoch):
            opt.zero_grad()
            model(batch)[0].backward()
            opt.step()
    assert _recall(model, data) > before + 0.05


def test_bad_model_values_are_errors_that_name_the_key(bundle: Path) -> None:
    with pytest.raises(ConfigError, match="model.readout"):
        _setup(bundle, ["model.readout=min"])
    with pytest.raises(ConfigError, match="model.backbone"):
        _setup(bundle, ["model.backbone=rnn"])


@pytest.mark.parametrize("name", ["gowalla", "beauty"])
def test_config_files_load(name: str) -> None:
    cfg = load_config("dismir", str(REPO / f"configs/dismir/{name}.yaml"))
    assert cfg.data.bundle == f"data/bundles/{name}"
    assert cfg.run.dir == f"runs/dismir-{name}"
    assert cfg.model.dim == 64 and cfg.model.partition_negatives == 100


def test_table4_statistics_are_in_range(bundle: Path) -> None:
    from research.dismir_analysis import interest_statistics

    model, data = _setup(bundle, [])
    stats = interest_statistics(model, data, "test", max_users=5)
    assert 0.0 <= stats["min"] <= stats["max"] <= 100.0
    assert -100.0 <= stats["similarity"] <= 100.0 and stats["std"] >= 0.0


def test_unique_lookup_equals_per_feature_lookup(bundle: Path) -> None:
    """The deduplicated one-id-per-bag lookup gives every feature the rows and the table the
    gradient of indexing the table per feature (repeats summed into their row)."""
    from distrec.models.common.lookup import unique_lookup

    model, data = _setup(bundle, [])
    kjt = next(iter(data.train_batches(0))).sparse["ec"]
    assert len(torch.unique(kjt.values())) < kjt.values().numel()  # the batch has repeats
    weight = model.item_weight()
    dedup = unique_lookup(model.ec, kjt)
    for key in kjt.keys():
        torch.testing.assert_close(dedup[key], weight[kjt[key].values()])
    grads = []
    for emb in (
        {k: weight[kjt[k].values()] for k in kjt.keys()},
        unique_lookup(model.ec, kjt),
    ):
        weight.grad = None
        sum((v * (i + 1)).sin().sum() for i, v in enumerate(emb.values())).backward()
        grads.append(weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_negative_pool_draws_candidates_from_one_shared_pool(bundle: Path) -> None:
    _, data = _setup(bundle, ["model.negative_pool=5"])
    batch = next(iter(data.train_batches(0)))
    neg = batch.sparse["ec"]["neg"].values()
    assert neg.numel() == 32 * 4 and len(torch.unique(neg)) <= 5


@pytest.mark.parametrize("variant", ["mir", "comirec_sa_mir"])
def test_loss_and_gradients_equal_the_hardest_negative_loss_on_the_table(
    bundle: Path, variant: str
) -> None:
    """The one-lookup forward gives the loss and every gradient of paper 4.3's loss written
    directly on the table rows (hardest of the candidates by max), and a candidate that is
    nobody's hardest and not otherwise read gets no gradient (fused optimisers leave its row)."""
    from distrec.models.dismir.layers import hard_negative_bpr, score_items

    model, data = _setup(bundle, VARIANTS[variant])
    # the first batch of the epoch with a candidate that is nobody's hardest and not otherwise
    # read (which batch that is depends on the stream's sample order)
    checked = 0
    for batch in data.train_batches(0):
        kjt = batch.sparse["ec"]
        weight = model.item_weight()
        results = []
        for direct in (False, True):
            model.zero_grad()
            if direct:
                emb = {k: weight[kjt[k].values()] for k in kjt.keys()}
                q = model.interests(emb, batch)[0]
                pos, neg = kjt["pos"].values(), kjt["neg"].values().view(32, -1)
                readout = model.cfg.readout
                s_pos = score_items(q, emb["pos"].unsqueeze(1), readout).squeeze(1)
                s_neg = score_items(q, emb["neg"].view(32, neg.shape[1], -1), readout)
                loss = hard_negative_bpr(s_pos, s_neg, neg != pos.unsqueeze(1))
            else:
                loss, _ = model(batch)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results.append((loss.detach(), grads, s_neg if direct else None))
        torch.testing.assert_close(results[0][0], results[1][0])
        assert results[0][1].keys() == results[1][1].keys()
        for name, g in results[0][1].items():
            torch.testing.assert_close(g, results[1][1][name], msg=name)
        s_neg = results[1][2].detach().masked_fill(neg == pos.unsqueeze(1), -1e9)
        hardest = set(neg.gather(1, s_neg.argmax(1, keepdim=True)).flatten().tolist())
        read = set(kjt["hist"].values().tolist()) | set(pos.tolist()) | hardest
        idle = sorted(set(neg.flatten().tolist()) - read)
        if not idle:  # every candidate of this batch is read: look at the next one
            continue
        table_grad = results[0][1][next(n for n in results[0][1] if "item" in n)]
        assert bool((table_grad[idle] == 0).all())
        checked += 1
        break
    assert checked, "no batch of the epoch had an idle candidate"
