"""IGRec sampled mode: unlimited fanout equals full mode (loss and gradients, every variant that
changes the sampled path); capped fanout looks up fewer rows and trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distrec.config import load_config
from distrec.data.schema import Manifest
from distrec.models.igrec import IGRec, build_data, build_model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("igs") / "b", users=60, items=40, groups=10)


def _setup(bundle: Path, *overrides: str) -> tuple[IGRec, object]:
    cfg = load_config(
        "igrec",
        None,
        [f"data.bundle={bundle}", "data.batch_size=24", "model.dim=8", "graph.layers=2",
         *overrides],
    )  # fmt: skip
    torch.manual_seed(0)
    return build_model(cfg, Manifest.load(str(bundle)), torch.device("cpu")), build_data(
        cfg, str(bundle), 0, 1
    )


@pytest.mark.parametrize(
    "variant",
    [
        (),
        ("model.interest_module=embedding", "model.hard=true"),
        ("model.layer_combine=sum", "model.group_item_rep=propagated"),
        ("model.propagate_fused_users=false", "model.interest_module=none"),
    ],
)
def test_unlimited_fanout_equals_full(bundle: Path, variant: tuple[str, ...]) -> None:
    full, fdata = _setup(bundle, *variant)
    samp, sdata = _setup(bundle, "graph.mode=sampled", "graph.fanout=[]", *variant)
    samp.load_state_dict(full.state_dict())
    for step, (bf, bs) in enumerate(zip(fdata.train_batches(0), sdata.train_batches(0))):
        # sampled mode looks up only the neighbourhood
        assert int(bs.dense["lookup_n"].sum()) <= sum(full.counts.values())
        lf, pf = full(bf)
        ls, ps = samp(bs)
        torch.testing.assert_close(ls, lf)
        for k in pf:
            torch.testing.assert_close(ps[k], pf[k], msg=k)
        lf.backward()
        ls.backward()
        for (n, p), q in zip(full.named_parameters(), samp.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, msg=n)
        full.zero_grad()
        samp.zero_grad()
        if step == 1:
            break


def test_capped_fanout_fetches_fewer_rows_and_trains(bundle: Path) -> None:
    model, data = _setup(
        bundle, "graph.mode=sampled", "graph.fanout=[2,1]", "model.member_cap=2",
        "graph.fanout_over=union",
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses, fewer = [], []
    for epoch in range(6):
        for b in data.train_batches(epoch):
            n = b.dense["lookup_n"]
            fewer.append(int(n[0]) < model.num_users or int(n[1]) < model.num_items)
            # no group reads more than member_cap members
            assert int(torch.bincount(b.dense["mem.g"]).max()) <= 2
            loss, _ = model(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    assert sum(losses[-3:]) < sum(losses[:3])
    # 2 hops of fanout [2, 1] from 24 seeds reach most of a 60-user graph: most steps, not all
    assert sum(fewer) > 0.8 * len(fewer)
