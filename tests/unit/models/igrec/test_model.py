"""IGRec model on a tiny bundle: member cap, ablation switches, training, evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distrec.config import load_config
from distrec.data.schema import Manifest
from distrec.models.api import Batch
from distrec.models.igrec import IGRec, build_data, build_model

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("igrec") / "b", users=60, items=40, groups=10)


def _setup(bundle: Path, *overrides: str) -> tuple[IGRec, object]:
    cfg = load_config(
        "igrec",
        None,
        [
            f"data.bundle={bundle}",
            "data.batch_size=64",
            "model.dim=8",
            "graph.layers=2",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg, Manifest.load(str(bundle)), torch.device("cpu"))
    return model, build_data(cfg, str(bundle), 0, 1)


def test_member_cap_above_every_group_size_equals_uncapped(bundle: Path) -> None:
    ref, data = _setup(bundle)
    from distrec.data.bundle import Bundle

    sizes = Bundle(bundle).graph("group_user").degrees()  # members per group
    assert sizes.max() > 1
    capped, _ = _setup(bundle, f"model.member_cap={int(sizes.max())}")
    capped.load_state_dict(ref.state_dict())
    batch = next(iter(data.train_batches(0)))
    loss_ref, loss_ref_parts = ref(batch)
    loss_cap, _ = capped(batch)
    torch.testing.assert_close(loss_cap, loss_ref)
    loss_ref.backward()
    loss_cap.backward()
    for (n, p), q in zip(ref.named_parameters(), capped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=n)
    # A cap below the largest group changes the readout (a sample of the members).
    small, _ = _setup(bundle, "model.member_cap=1")
    small.load_state_dict(ref.state_dict())
    assert small(batch)[1]["group"] != loss_ref_parts["group"]


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.interest_module=none",),
        ("model.selection=mean",),
        ("model.regularizer=false",),
        ("model.hard=true",),
        ("model.interest_module=fc1",),
        ("model.interest_module=fc2",),
        ("model.interest_module=embedding",),
        ("model.layer_combine=sum", "model.group_item_rep=propagated"),
        ("model.propagate_fused_users=false", "model.member_cap=2"),
    ],
)
def test_variants_train_and_rank(bundle: Path, overrides: tuple[str, ...]) -> None:
    model, data = _setup(bundle, *overrides)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = last = None
    for epoch in range(8):
        for batch in data.train_batches(epoch):
            loss, parts = model(batch)
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = first if first is not None else float(parts["user"])
            last = float(parts["user"])
    assert last < first  # the user BPR loss goes down
    model.eval()
    model.prepare_eval()
    items = model.item_reps(data.item_batch(torch.arange(40)))
    for task in ("user", "group"):
        queries = list(data.eval_queries("test", task))
        assert queries and sum(len(q.ids) for q in queries) > 0
        for q in queries:
            s = model.score(model.query(q.batch, task), items, task)
            assert s.shape == (len(q.ids), 40) and torch.isfinite(s).all()
            # Targets of test are never excluded, and test excludes the valid items too.
            for t, ex in zip(q.targets, q.exclude):
                assert not set(t) & set(ex)


@pytest.mark.parametrize("partition", ["owned", "replicated"])
@pytest.mark.parametrize("cap", [0, 1])
def test_eval_is_deterministic_and_train_is_seeded(bundle: Path, cap: int, partition: str) -> None:
    model, data = _setup(bundle, f"model.member_cap={cap}", f"graph.partition={partition}")
    model.eval()
    model.prepare_eval()
    groups = Batch(dense={"ids": torch.arange(model.num_groups)})
    a = model.query(groups, "group").clone()
    # the member cap's draws come from the model's own generator, not the global RNG
    torch.manual_seed(12345)
    torch.rand(17)
    model.prepare_eval()
    torch.testing.assert_close(model.query(groups, "group"), a)
    model.train()
    batch = next(iter(data.train_batches(0)))
    torch.testing.assert_close(model(batch)[0], model(batch)[0])


def test_configs_load() -> None:
    for path in sorted((REPO / "configs" / "igrec").glob("*.yaml")):
        cfg = load_config("igrec", str(path))
        cfg.model.check()
        # the paper's data sets run full mode; the 10^6-user synthetic config samples
        assert cfg.graph.mode == ("sampled" if path.stem == "synthetic_groups" else "full")
        assert cfg.graph.mode == "full" or cfg.graph.fanout
