"""``distrec.export`` and ``distrec.recommend`` on trained runs, as real processes.

* exported vectors (2 ranks: one part file per rank) reload and reproduce the scores evaluation
  ranks by: ``model.score`` on the reloaded user and item vectors equals the score column of
  ``distrec.recommend`` (computed by the evaluation path) for MF, LightGCN (propagated graph
  representations) and DisMIR (one row per interest, max over interests);
* ``recommend --ids`` returns those users and only those, ``--all`` every user, and an unknown raw
  id is a one-line error (exit 2) naming it.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distrec.data.bundle import Bundle
from distrec.data.schema import ID_MAP, Manifest, TableInfo, schema_to_json
from distrec.engine.export import read_vectors
from distrec.engine.session import load_run_config
from distrec.models.registry import get_spec
from tests.distributed.launch import REPO, env, run, torchrun_cmd
from tests.helpers.bundles import write_tiny_bundle
from tests.unit.models.dismir.seq_bundle import write_seq_bundle

TRAIN = ["train.max_steps=20", "metrics.enabled=false", "data.batch_size=64"]
MODELS = {
    "mf": ("configs/tiny/mf.yaml", []),
    "lightgcn": (
        "configs/lightgcn/synth.yaml",
        ["graph.mode=full", "model.dim=16", "data.eval_batch_size=32", "train.epochs=1"],
    ),
    "dismir": (
        "configs/dismir/gowalla.yaml",
        [
            "model.dim=8",
            "model.max_len=6",
            "model.num_interests=3",
            "data.eval_batch_size=16",
            "model.partition_negatives=10",
            "model.hard_candidates=4",
            "train.epochs=2",
        ],
    ),  # fmt: skip
}


def _add_id_tables(bundle: Path) -> Path:
    """Raw-id tables (as the Spark build writes them) for a test bundle that has none: a
    permutation, so that an index-for-raw-id mix-up shows."""
    m = Manifest.load(str(bundle))
    rng = np.random.default_rng(1)
    for kind, n, prefix in (("users", m.num_users, "u"), ("items", m.num_items, "i")):
        raw = [f"{prefix}{v}" for v in rng.permutation(n) * 3 + 1]
        t = pa.table({"raw_id": raw, "idx": np.arange(n, dtype=np.int64)}, schema=ID_MAP)
        (bundle / "ids" / kind).mkdir(parents=True, exist_ok=True)
        pq.write_table(t, bundle / "ids" / kind / "part-00000.parquet")
        m.tables[f"ids/{kind}"] = TableInfo(f"ids/{kind}", n, schema_to_json(ID_MAP))
    m.write(str(bundle))
    return bundle


def _train(model: str, bundle: Path, run_dir: Path, port: int) -> Path:
    config, extra = MODELS[model]
    args = [model, "--config", config, f"data.bundle={bundle}", f"run.dir={run_dir}"]
    run(torchrun_cmd("distrec.train", [*args, *TRAIN, *extra], 1, port), timeout=400)
    return run_dir


def _cli(module: str, args: list[str], world: int, port: int) -> None:
    run(torchrun_cmd(module, args, world, port), timeout=400)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("exp") / "b", users=60, items=40, per_user=8)


@pytest.fixture(scope="module")
def mf_run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train("mf", tiny, tmp_path_factory.mktemp("exp") / "mf", 29700)


def _vectors(out: Path) -> dict[str, np.ndarray]:
    t = read_vectors(out)
    vec = np.asarray(t.column("vector").to_pylist(), dtype=np.float32)
    raw = t.column("raw_id").to_pylist()
    if "interest" not in t.column_names:
        return {r: v for r, v in zip(raw, vec, strict=True)}
    f = max(t.column("interest").to_pylist()) + 1
    out_: dict[str, np.ndarray] = {}
    for r, i, v in zip(raw, t.column("interest").to_pylist(), vec, strict=True):
        out_.setdefault(r, np.zeros((f, vec.shape[1]), np.float32))[i] = v
    return out_


def _check_scores(run_dir: Path, users: Path, items: Path, recs: Path, parts: int) -> int:
    """model.score on the reloaded vectors == the recommended (evaluation) scores; returns the
    number of (user, item) pairs checked."""
    for out in (users, items):
        assert len(list(out.glob("part-*.parquet"))) == parts  # each rank wrote its own rows
        assert (out / "_SUCCESS").exists() and (out / "_manifest.json").exists()
    u, i = _vectors(users), _vectors(items)
    cfg = load_run_config(str(run_dir))
    manifest = Manifest.load(cfg.data.bundle)
    assert len(i) == manifest.num_items
    model = get_spec(cfg.model_name).build_model(cfg, manifest, torch.device("meta"))
    rec = pq.read_table(recs).to_pydict()
    assert rec["user"], "recommend wrote no rows"
    q = torch.from_numpy(np.stack([u[x] for x in rec["user"]]))
    it = torch.from_numpy(np.stack([i[x] for x in rec["item"]]))
    # score of row j against item j: the diagonal of the [n, n] score matrix, in blocks
    got = torch.cat(
        [
            model.score(q[a : a + 64], it[a : a + 64]).diagonal()
            for a in range(0, len(rec["user"]), 64)
        ]
    )
    torch.testing.assert_close(got, torch.tensor(rec["score"]), rtol=1e-5, atol=1e-5)
    return len(rec["user"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("model,port", [("mf", 29710), ("lightgcn", 29730)])
def test_exported_vectors_reproduce_scores(
    model: str, port: int, tiny: Path, mf_run: Path, tmp_path: Path
) -> None:
    run_dir = mf_run if model == "mf" else _train(model, tiny, tmp_path / model, port)
    users, items, recs = tmp_path / "users", tmp_path / "items", tmp_path / "recs.parquet"
    jobs = [
        ("distrec.export", ["--run-dir", str(run_dir), "--what", "users", "--out", str(users)]),
        ("distrec.export", ["--run-dir", str(run_dir), "--what", "items", "--out", str(items)]),
        ("distrec.recommend", ["--run-dir", str(run_dir), "--all", "--k", "5", "--out", str(recs)]),
    ]
    with ThreadPoolExecutor(3) as pool:
        done = [pool.submit(_cli, m, a, 2, port + 2 + j) for j, (m, a) in enumerate(jobs)]
        for d in done:
            d.result()
    n = _check_scores(run_dir, users, items, recs, parts=2)
    bundle = Bundle(load_run_config(str(run_dir)).data.bundle)
    assert n == 5 * bundle.manifest.num_users  # --all: every user, K each
    assert set(pq.read_table(recs).column("user").to_pylist()) == set(
        bundle.raw_ids("users").astype(str)
    )


@pytest.mark.timeout(900)
def test_multi_interest_export_one_row_per_interest(tmp_path: Path) -> None:
    bundle = _add_id_tables(write_seq_bundle(tmp_path / "seq"))
    run_dir = _train("dismir", bundle, tmp_path / "dismir", 29750)
    inter, items, recs = tmp_path / "interests", tmp_path / "items", tmp_path / "recs.parquet"
    jobs = [
        ("distrec.export", ["--run-dir", str(run_dir), "--what", "interests", "--out", str(inter)]),
        ("distrec.export", ["--run-dir", str(run_dir), "--what", "items", "--out", str(items)]),
        ("distrec.recommend", ["--run-dir", str(run_dir), "--k", "5", "--out", str(recs)]),
    ]
    with ThreadPoolExecutor(3) as pool:
        done = [pool.submit(_cli, m, a, 2, 29752 + j) for j, (m, a) in enumerate(jobs)]
        for d in done:
            d.result()
    t = read_vectors(inter)
    assert t.column_names == ["raw_id", "interest", "vector"]
    assert sorted(set(t.column("interest").to_pylist())) == [0, 1, 2]
    _check_scores(run_dir, inter, items, recs, parts=2)
    # a single-vector request on a multi-interest model is a one-line error
    p = subprocess.run(
        [sys.executable, "-m", "distrec.export", "--run-dir", str(run_dir), "--what", "users",
         "--out", str(tmp_path / "u")],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2 and "use --what interests" in p.stderr.strip().splitlines()[-1]


@pytest.mark.timeout(600)
def test_recommend_for_id_list_returns_those_users_only(
    tiny: Path, mf_run: Path, tmp_path: Path
) -> None:
    raw = Bundle(tiny).raw_ids("users").astype(str)
    picked = [raw[7], raw[3], raw[42]]
    ids_out, file_out = tmp_path / "ids.parquet", tmp_path / "file.parquet"
    user_file = tmp_path / "users.txt"
    user_file.write_text("\n".join(picked[:2]) + "\n")
    base = ["--run-dir", str(mf_run), "--k", "4"]
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(
            _cli, "distrec.recommend", [*base, "--ids", ",".join(picked), "--out", str(ids_out)],
            2, 29760,
        )  # fmt: skip
        b = pool.submit(
            _cli, "distrec.recommend", [*base, "--users", str(user_file), "--out", str(file_out)],
            1, 29762,
        )  # fmt: skip
        a.result(), b.result()
    got = pq.read_table(ids_out).to_pydict()
    assert sorted(set(got["user"])) == sorted(picked) and len(got["user"]) == 3 * 4
    assert sorted(set(pq.read_table(file_out).column("user").to_pylist())) == sorted(picked[:2])
    # ranks 1..K per user, best first
    for u in picked:
        rows = [(r, s) for x, r, s in zip(got["user"], got["rank"], got["score"]) if x == u]
        assert [r for r, _ in sorted(rows)] == [1, 2, 3, 4]
        assert [s for _, s in sorted(rows)] == sorted((s for _, s in rows), reverse=True)


def test_recommend_unknown_id_is_a_one_line_error(tiny: Path, mf_run: Path, tmp_path: Path) -> None:
    raw = Bundle(tiny).raw_ids("users").astype(str)
    p = subprocess.run(
        [sys.executable, "-m", "distrec.recommend", "--run-dir", str(mf_run), "--ids",
         f"{raw[0]},no-such-user", "--out", str(tmp_path / "r.parquet")],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "'no-such-user'" in lines[0] and "ids/users" in lines[0]
    assert not (tmp_path / "r.parquet").exists()
