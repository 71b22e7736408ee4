"""Run a worker script under torchrun (real gloo ranks as processes) from a test.

Example::

    from tests.helpers.torchrun import run_session_worker
    res = run_session_worker("igrec", 2, 29651, tmp / "two.pt", "cache", [f"data.bundle={b}"])
    res["losses"]  # global loss per step
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from distrec.distributed.env import TEARDOWN_WARNING

REPO = Path(__file__).resolve().parents[2]
SESSION_WORKER = Path(__file__).with_name("session_worker.py")


def torchrun(script: Path, args: list[str], world: int, port: int, timeout: float = 300) -> None:
    """``torchrun --nproc_per_node=world script args...`` from the repo root with one thread
    per process; fails the test with the tail of stderr when a rank fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
        "--master_addr=127.0.0.1", f"--master_port={port}", str(script), *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    # the ranks joined their Gloo threads before exit (else a rare SIGABRT at interpreter exit)
    assert TEARDOWN_WARNING not in proc.stderr, proc.stderr[-3000:]


def run_session_worker(
    model: str, world: int, port: int, out: Path, capture: str, overrides: list[str]
) -> dict[str, Any]:
    """Train ``model`` for two epochs at ``world`` ranks with :mod:`tests.helpers.session_worker`
    and return what rank 0 saved: ``losses`` plus the ``capture`` outputs."""
    torchrun(SESSION_WORKER, [model, str(out), capture, *overrides], world, port)
    return torch.load(out)
