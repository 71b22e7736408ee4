"""Process-group teardown joins Gloo's worker threads before the interpreter exits.

A Gloo worker thread drops a finished collective's tensors shortly after ``wait()`` returns;
if that happens during interpreter finalization the process aborts (SIGABRT, "terminate called
without an active exception"; it failed CI once). ``destroy_distributed`` must leave no Gloo
thread behind once the caller holds no reference to the process group, and must report the
threads when a reference is still held. Each case runs in a fresh interpreter (real gloo).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from distrec.distributed.env import TEARDOWN_WARNING
from tests.distributed.launch import REPO, env

SCRIPT = """
import sys
import torch
import torch.distributed as dist
from distrec.distributed.env import destroy_distributed, gloo_worker_threads

dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
for _ in range(20):
    dist.all_reduce(torch.ones(64))
assert gloo_worker_threads(), "a gloo process group runs worker threads"
held = dist.group.WORLD if sys.argv[1] == "hold" else None
print(len(destroy_distributed()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
@pytest.mark.parametrize("mode", ["release", "hold"])
def test_destroy_joins_gloo_threads_unless_still_referenced(mode: str) -> None:
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    left = int(p.stdout.strip().splitlines()[-1])
    assert (left > 0) == (mode == "hold"), p.stderr
    assert (TEARDOWN_WARNING in p.stderr) == (mode == "hold")
