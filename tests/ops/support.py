"""Helpers for the ops tests: free ports in the ops range, HTTP polling, a Prometheus API client.

The servers are Debian's ``prometheus`` and ``prometheus-pushgateway`` packages
(``scripts/ci_deps.sh`` installs them); a test that needs one skips with that hint when absent.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OPS_PORTS = range(9450, 9500)  # this area's range; nothing else in the suite listens here
_taken: set[int] = set()


def free_port() -> int:
    """A loopback port in 9450-9499 that nobody listens on (and no earlier call handed out)."""
    for port in OPS_PORTS:
        if port in _taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port left in 9450-9499")


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (rank r of a run listens on base + r)."""
    for _ in range(len(OPS_PORTS)):
        base = free_port()
        rest = [free_port() for _ in range(n - 1)]
        if rest == list(range(base + 1, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports in 9450-9499")


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early when ``proc`` has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            http_get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up within {timeout}s")


def binary_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: run scripts/ci_deps.sh (Debian package {name})")
    return path


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PromServer:
    """A running Prometheus server on loopback and a tiny client for its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen) -> None:
        self.url, self.proc = url, proc

    def api(self, path: str, **params: Any) -> Any:
        q = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{q}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]
