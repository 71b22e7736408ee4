"""Launch distrec entry points as real processes (torchrun for N ranks) from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from distrec.distributed.env import TEARDOWN_WARNING

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def torchrun_cmd(module: str, args: list[str], nproc: int, port: int) -> list[str]:
    return [
        *TORCHRUN,
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        module,
        *args,
    ]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\n--- stderr ---\n{p.stderr[-6000:]}"
        )
    # every rank joined its Gloo threads before exit (distrec.distributed.env.destroy_distributed
    # warns otherwise): the condition of a rare SIGABRT at interpreter exit
    assert TEARDOWN_WARNING not in p.stderr, p.stderr[-3000:]
    return p


def train(
    bundle: Path,
    run_dir: Path,
    nproc: int,
    port: int,
    *extra: str,
    config: str = "configs/tiny/mf.yaml",
) -> subprocess.CompletedProcess[str]:
    args = ["mf", "--config", config, f"data.bundle={bundle}", f"run.dir={run_dir}", *extra]
    return run(torchrun_cmd("distrec.train", args, nproc, port))


def losses(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())
