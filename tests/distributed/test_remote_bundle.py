"""Bundles on an S3-compatible object store: a real moto server on loopback, each bundle uploaded
through pyarrow.fs, 2 real ranks trained from ``s3://`` to the losses and metrics of the local
copy, reading the same rows per rank: the pair reader (MF), the streamed sequence reader
(DisMIR, several row groups) and IGRec's graph / group streams."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from distrec.data.bundle import Bundle
from tests.distributed.launch import losses, metrics, run, torchrun_cmd, train
from tests.helpers.bundles import write_tiny_bundle
from tests.unit.data.seq_bundles import write_grouped_seq_bundle

moto_server = pytest.importorskip("moto.server")

KEY, SECRET = "distrec-test-key", "distrec-test-secret-never-logged"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the torchrun children inherit them (tests.distributed.launch.env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def store(s3: dict[str, str]) -> pafs.S3FileSystem:
    fs = pafs.S3FileSystem(
        access_key=KEY,
        secret_key=SECRET,
        endpoint_override=s3["AWS_ENDPOINT_URL"].split("//")[1],
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("bundles")  # the bucket
    return fs


def _upload(fs: pafs.S3FileSystem, local: Path) -> tuple[Path, str]:
    pafs.copy_files(str(local), f"bundles/{local.parent.name}", destination_filesystem=fs)
    return local, f"s3://bundles/{local.parent.name}"


@pytest.fixture(scope="module")
def bundles(store: pafs.S3FileSystem, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    local = write_tiny_bundle(
        tmp_path_factory.mktemp("s3") / "b", users=120, items=80, per_user=10, graph_parts=16
    )
    return _upload(store, local)


@pytest.fixture(scope="module")
def seq_bundles(
    store: pafs.S3FileSystem, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    # 16 row groups of sequences (6 rows each), dealt to 4 shards: each rank streams its own
    return _upload(store, write_grouped_seq_bundle(tmp_path_factory.mktemp("s3seq") / "b"))


@pytest.fixture(scope="module")
def group_bundles(
    store: pafs.S3FileSystem, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    local = write_tiny_bundle(
        tmp_path_factory.mktemp("s3grp") / "b",
        users=120, items=80, per_user=10, groups=24, graph_parts=16,
    )  # fmt: skip
    return _upload(store, local)


def test_bundle_reads_the_same_from_s3(bundles: tuple[Path, str]) -> None:
    local, uri = bundles
    a, b = Bundle(local), Bundle(uri)
    assert a.manifest == b.manifest
    ga, gb = a.graph("ui.buy"), b.graph("ui.buy")
    assert (ga.indptr == gb.indptr).all() and (ga.indices == gb.indices).all()
    rows = b.graph_rows("ui.buy", 30, 60)
    assert rows.src.min() >= 30 and rows.src.max() < 60
    assert b.rows_read["graphs/ui.buy"] == ga.num_src + int((ga.degrees()[30:60] > 0).sum())
    assert SECRET not in repr(b) and KEY not in repr(b)


def test_two_ranks_train_from_s3_like_the_local_copy(
    bundles: tuple[Path, str], tmp_path: Path
) -> None:
    local, uri = bundles
    extra = ["train.epochs=2", "train.log_every=1"]
    train(local, tmp_path / "local", 2, 29681, *extra)
    p = train(uri, tmp_path / "remote", 2, 29683, *extra)  # type: ignore[arg-type]
    got, want = metrics(tmp_path / "remote"), metrics(tmp_path / "local")
    assert got["global_step"] == want["global_step"] > 0
    for k, v in want["test"].items():
        assert got["test"][k] == pytest.approx(v, abs=1e-6), k
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in losses(tmp_path / "remote")]),
        torch.tensor([r["loss"] for r in losses(tmp_path / "local")]),
    )
    logs = "".join(f.read_text() for f in (tmp_path / "remote" / "logs").glob("*")) + p.stderr
    assert SECRET not in logs and KEY not in logs


# (model, bundle fixture, arguments): tiny models, one or two short epochs
CASES = [
    ("dismir", "seq_bundles",
     ["--config", "configs/dismir/gowalla.yaml", "data.batch_size=16", "data.eval_batch_size=4",
      "data.partitions=4", "model.dim=8", "model.max_len=6", "model.partition_negatives=8",
      "train.epochs=2", "train.log_every=1", "metrics.enabled=false"]),
    ("igrec", "group_bundles",
     ["data.batch_size=64", "data.eval_batch_size=32", "model.dim=8", "graph.mode=full",
      "train.epochs=2", "train.eval_every=1", "train.log_every=1", "metrics.enabled=false",
      "train.select_metric=user/ndcg@10"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_two_ranks_train_a_model_from_s3_like_the_local_copy(
    request: pytest.FixtureRequest, tmp_path: Path, case: tuple
) -> None:
    """The same losses, metrics and rows read per rank from ``s3://`` as from the local copy."""
    model, fixture, extra = case
    local, uri = request.getfixturevalue(fixture)
    port = 29771 + 2 * CASES.index(case)

    def cmd(bundle: object, run_dir: Path, port: int) -> list[str]:
        args = [model, *extra, f"data.bundle={bundle}", f"run.dir={run_dir}"]
        return torchrun_cmd("distrec.train", args, 2, port)

    with ThreadPoolExecutor(2) as pool:  # both at once: start-up dominates
        remote = pool.submit(run, cmd(uri, tmp_path / "remote", port))
        run(cmd(local, tmp_path / "local", port + 1))
        p = remote.result()
    got, want = metrics(tmp_path / "remote"), metrics(tmp_path / "local")
    assert got["global_step"] == want["global_step"] > 0
    assert want["test"]
    for k, v in want["test"].items():
        assert got["test"][k] == pytest.approx(v, abs=1e-6), k
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in losses(tmp_path / "remote")]),
        torch.tensor([r["loss"] for r in losses(tmp_path / "local")]),
    )
    stats = {d: [json.loads((tmp_path / d / "data_stats" / f"rank{r}.json").read_text())
                 for r in range(2)] for d in ("remote", "local")}  # fmt: skip
    for a, b in zip(stats["remote"], stats["local"], strict=True):  # rank by rank
        assert a["rows_read"] == b["rows_read"] and a["shards"] == b["shards"]
    if model == "dismir":  # each sequence row read once per epoch, by its shard's rank only
        # (and no next-epoch window after the last epoch)
        rows = Bundle(local).table("sequences", ["user"]).num_rows
        read = [s["rows_read"]["sequences"] for s in stats["remote"]]
        assert sum(read) == 2 * rows and min(read) > 0
    logs = "".join(f.read_text() for f in (tmp_path / "remote" / "logs").glob("*")) + p.stderr
    assert SECRET not in logs and KEY not in logs
