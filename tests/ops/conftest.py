"""Fixtures for the ops tests: real Prometheus / Pushgateway servers on loopback.

The servers are Debian's ``prometheus`` and ``prometheus-pushgateway`` packages
(``scripts/ci_deps.sh`` installs them); a test that needs one skips with that hint when absent.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import PromServer, binary_or_skip, free_port, stop_process, wait_http


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Any]:
    """``start(config_dict) -> PromServer``: Prometheus with that config, stopped afterwards."""
    binary = binary_or_skip("prometheus")
    procs: list[subprocess.Popen] = []

    def start(config: dict[str, Any]) -> PromServer:
        import yaml

        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", timeout=60, proc=proc)
        return PromServer(url, proc)

    yield start
    for p in procs:
        stop_process(p)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """``host:port`` of a fresh Pushgateway on loopback."""
    binary = binary_or_skip("prometheus-pushgateway")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
