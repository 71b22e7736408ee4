"""Launch distrec entry points as real processes (torchrun for N ranks) from tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


def kill_after_first_checkpoint(cmd: list[str], run_dir: Path, timeout_s: float = 120) -> None:
    """Start ``cmd`` (torchrun) and SIGKILL the launcher and every rank as soon as a complete
    checkpoint exists under ``run_dir``; returns once all of them are gone."""
    p = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout_s
    try:
        while not latest.exists():
            assert p.poll() is None, "training ended before writing a checkpoint"
            assert time.monotonic() < deadline, f"no checkpoint within {timeout_s:.0f} s"
            time.sleep(0.01)
    finally:
        # the launcher and its ranks, mid-run: torchrun starts each rank in its own session, so
        # killing the launcher's group alone leaves the ranks training on as orphans
        ranks = _descendants(p.pid)
        os.killpg(p.pid, signal.SIGKILL)
        for pid in ranks:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()
        for pid in ranks:  # reaped by init; wait until they are gone
            while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
                time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out
