"""Run a worker script under torchrun (real gloo ranks as processes) from a test.

Example::

    from tests.helpers.torchrun import run_session_worker
    res = run_session_worker("igrec", 2, 29651, tmp / "two.pt", "cache", [f"data.bundle={b}"])
    res["losses"]  # global loss per step
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.distributed.launch import TORCHRUN, run

SESSION_WORKER = Path(__file__).with_name("session_worker.py")


def torchrun(script: Path, args: list[str], world: int, port: int, timeout: float = 300) -> None:
    """``torchrun --nproc_per_node=world script args...`` from the repo root with one thread
    per process, through :func:`tests.distributed.launch.run`: fails the test with the tail of
    stderr when a rank fails or leaves Gloo threads behind at exit."""
    cmd = [
        *TORCHRUN, f"--nproc_per_node={world}",
        "--master_addr=127.0.0.1", f"--master_port={port}", str(script), *args,
    ]  # fmt: skip
    run(cmd, timeout)


def run_session_worker(
    model: str, world: int, port: int, out: Path, capture: str, overrides: list[str]
) -> dict[str, Any]:
    """Train ``model`` for two epochs at ``world`` ranks with :mod:`tests.helpers.session_worker`
    and return what rank 0 saved: ``losses`` plus the ``capture`` outputs."""
    torchrun(SESSION_WORKER, [model, str(out), capture, *overrides], world, port)
    return torch.load(out)
