"""A bundle on an S3-compatible object store: a real moto server on loopback, the bundle uploaded
through pyarrow.fs, 2 real ranks trained from ``s3://`` to the metrics of the local copy."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from distrec.data.bundle import Bundle
from tests.distributed.launch import losses, metrics, train
from tests.helpers.bundles import write_tiny_bundle

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
def bundles(s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    local = write_tiny_bundle(
        tmp_path_factory.mktemp("s3") / "b", users=120, items=80, per_user=10, graph_parts=16
    )
    fs = pafs.S3FileSystem(
        access_key=KEY,
        secret_key=SECRET,
        endpoint_override=s3["AWS_ENDPOINT_URL"].split("//")[1],
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("bundles")  # the bucket
    pafs.copy_files(str(local), "bundles/tiny", destination_filesystem=fs)
    return local, "s3://bundles/tiny"


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
