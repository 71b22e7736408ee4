"""LightGCN single-device: both graph modes, exactness of sampled mode, learning, SPEC + configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distrec.config import load_config
from distrec.data.bundle import Bundle
from distrec.graph.adjacency import bipartite_from_bundle
from distrec.graph.propagate import combine_layers, propagate_full
from distrec.metrics.ranking import ranking_metrics
from distrec.models.lightgcn import SPEC
from distrec.models.lightgcn.data import LightGCNData
from distrec.models.lightgcn.model import LightGCN, LightGCNConfig
from distrec.models.registry import get_spec
from tests.helpers.bundles import write_tiny_bundle

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("lgcn") / "b", users=60, items=40, per_user=10)


def make(bundle: Path, mode: str, fanout: list[int] | None = None, seed: int = 0, **kw):
    g = bipartite_from_bundle(Bundle(bundle))
    torch.manual_seed(seed)
    model = LightGCN(LightGCNConfig(dim=16), g, layers=3, l2=1e-3)
    data = LightGCNData(
        bundle, 0, 1, mode=mode, layers=3, fanout=fanout, graph=g, prefetch=0, **kw
    )  # fmt: skip
    return model, data


def test_sampled_unlimited_fanout_gives_full_mode_loss_and_gradients(bundle: Path) -> None:
    model, full = make(bundle, "full", batch_size=48, num_negatives=2)
    _, sampled = make(bundle, "sampled", fanout=[-1, -1, -1], batch_size=48, num_negatives=2)
    bf, bs = full.build_batch(1, 2), sampled.build_batch(1, 2)
    # sampled mode fetches only the 3-hop frontier, full mode every row
    assert bf.dense["lookup_n"].tolist() == [60, 40]
    assert bs.sparse["ebc"].keys() == ["user", "pos", "neg"]
    lf, tf = model(bf)
    gf = torch.autograd.grad(lf, list(model.parameters()))
    ls, ts = model(bs)
    gs = torch.autograd.grad(ls, list(model.parameters()))
    torch.testing.assert_close(ls, lf)
    torch.testing.assert_close(ts["reg"], tf["reg"])
    for a, b in zip(gf, gs, strict=True):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


def test_capped_fanout_fetches_fewer_rows(bundle: Path) -> None:
    model, data = make(bundle, "sampled", fanout=[2, 2, 2], batch_size=8)
    batch = next(iter(data.train_batches(0)))
    n_u, n_i = batch.dense["lookup_n"].tolist()
    assert n_u + n_i < 100
    kjt = batch.sparse["ebc"]
    assert kjt["user"].values().numel() == n_u and kjt["pos"].values().numel() == n_i
    for k in range(3):
        rows = batch.dense[f"g.b{k}.ui.rows"]
        assert torch.bincount(rows).max() <= 2
    loss, terms = model(batch)
    loss.backward()
    assert torch.isfinite(loss) and set(terms) == {"bpr", "reg"}


def test_sampled_kjt_stride_is_equal_on_every_rank(bundle: Path) -> None:
    """Row-wise sharded EBCs need the same bag count on every rank; frontiers differ in size."""
    g = bipartite_from_bundle(Bundle(bundle))
    ranks = [
        LightGCNData(
            bundle, r, 2, mode="sampled", fanout=[2, 2, 2], graph=g, batch_size=16, prefetch=0
        )
        for r in range(2)
    ]
    # without a process group each rank pads to its own largest frontier; under torchrun
    # to_batch agrees on the largest of all ranks (distrec.data.collate.max_over_ranks)
    p0, p1 = (d.payload(0, 3) for d in ranks)
    b0, b1 = ranks[0].to_batch(dict(p0)), ranks[1].to_batch(dict(p1))
    for p, b in ((p0, b0), (p1, b1)):
        assert b.sparse["ebc"].stride() == int(p["stride"][0]) == int(b.dense["lookup_n"].max())
    assert b0.size == b1.size == 8


def test_prepare_eval_caches_full_propagation(bundle: Path) -> None:
    model, data = make(bundle, "full")
    model.eval()
    model.prepare_eval()
    w = {t: model.ebc.embedding_bags[t].weight for t in ("user", "item")}
    g = bipartite_from_bundle(Bundle(bundle))
    want = combine_layers(propagate_full(g, w, 3))
    q = next(iter(data.eval_queries("valid")))
    torch.testing.assert_close(model.query(q.batch), want["user"][q.ids])
    items = torch.tensor([3, 0, 39])
    torch.testing.assert_close(model.item_reps(data.item_batch(items)), want["item"][items])


@torch.no_grad()
def evaluate(model: LightGCN, data: LightGCNData, split: str, ks: list[int]) -> dict[str, float]:
    """Mean full-ranking metrics of ``split`` in this process, training positives masked."""
    model.eval()
    model.prepare_eval()
    items = model.item_reps(data.item_batch(torch.arange(data.num_items)))  # [N, D]
    sums: dict[str, float] = {}
    count = 0
    for q in data.eval_queries(split):
        scores = model.query(q.batch) @ items.T  # [B, N]
        for b, ex in enumerate(q.exclude):
            scores[b, torch.as_tensor(ex, dtype=torch.int64)] = -torch.inf
        top = scores.topk(max(ks), dim=1).indices.numpy()
        for name, v in ranking_metrics(top, q.targets, ks).items():
            sums[name] = sums.get(name, 0.0) + float(v.sum())
        count += sum(1 for t in q.targets if len(t))
    model.train()
    return {k: v / max(count, 1) for k, v in sums.items()}


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_training_improves_ranking(bundle: Path, mode: str) -> None:
    """A few epochs of BPR beat the untrained model on the planted-cluster tiny bundle."""
    fanout = [5, 5, 5] if mode == "sampled" else None
    model, data = make(bundle, mode, fanout=fanout, batch_size=64, seed=1)
    before = evaluate(model, data, "valid", [10])["recall@10"]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(15):
        for batch in data.train_batches(epoch):
            loss, _ = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    after = evaluate(model, data, "valid", [10])["recall@10"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert after > before + 0.05, (before, after)


def test_spec_and_every_config_file_build(bundle: Path, tmp_path: Path) -> None:
    assert get_spec("lightgcn") is SPEC
    files = sorted((REPO / "configs" / "lightgcn").glob("*.yaml"))
    assert {f.name for f in files} >= {"mafengwo.yaml", "synth.yaml"}
    for f in files:
        cfg = load_config("lightgcn", str(f))
        assert cfg.data.bundle and cfg.run.dir
        # The test bundle has only "buy"; configs for derived bundles name another behavior.
        over = [f"data.bundle={bundle}", "graph.fanout=[4,4,4]", "model.behavior="]
        cfg = load_config("lightgcn", str(f), over)
        model = SPEC.build_model(cfg, Bundle(bundle).manifest, torch.device("cpu"))
        for mode in ("full", "sampled"):
            cfg.graph.mode = mode
            data = SPEC.build_data(cfg, str(bundle), 0, 1)
            loss, _ = model(next(iter(data.train_batches(0))))
            assert torch.isfinite(loss)
    cfg = load_config("lightgcn", str(REPO / "configs" / "lightgcn" / "mafengwo.yaml"))
    assert cfg.model.dim == 64 and cfg.graph.layers == 3  # the paper's LightGCN baseline


def _torchrun(nproc: int, port: int, bundle: Path, run_dir: Path, extra: list[str]) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        f"--master_port={port}", "-m", "distrec.train", "lightgcn",
        "--config", str(REPO / "configs" / "lightgcn" / "synth.yaml"),
        f"data.bundle={bundle}", f"run.dir={run_dir}", "metrics.enabled=false",
        "train.log_every=1", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


@pytest.mark.slow
def test_two_rank_sampled_run_follows_one_rank_losses(bundle: Path, tmp_path: Path) -> None:
    """Row-wise sharded tables, capped fanout: a 2-rank run sees the same global batches, the same
    per-node neighbour samples and (padded) equal KJT strides, so its loss curve is the 1-rank one."""
    extra = ["data.batch_size=64", "train.max_steps=6", "train.epochs=1", "graph.fanout=[3,2]",
             "train.sparse_optimizer=rowwise_adagrad", "train.sparse_lr=0.2"]  # fmt: skip
    one = _torchrun(1, 29561, bundle, tmp_path / "w1", extra)
    two = _torchrun(2, 29562, bundle, tmp_path / "w2", extra)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    l1 = torch.tensor([r["loss"] for r in one], dtype=torch.float64)
    l2 = torch.tensor([r["loss"] for r in two], dtype=torch.float64)
    torch.testing.assert_close(l2, l1, rtol=1e-4, atol=1e-5)
    assert l1[-1] < l1[0]  # the updates did something
