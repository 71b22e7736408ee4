"""Process group set-up and rank-prefixed logging.

Under torchrun the usual ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` variables are set and
the process group is initialised from them. Without them (plain ``python -m distrec.evaluate``)
a world of one is created on an in-memory store, so the same code path (DMP, collectives) runs.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def quiet_warnings() -> None:
    """Silence deprecation chatter of torch.distributed/torchrec internals (not ours to fix)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed.*")
    warnings.filterwarnings("ignore", message=r".*is_fx_tracing.*")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


def init_distributed() -> DistEnv:
    """Initialise the default process group: nccl when CUDA is present, else gloo."""
    quiet_warnings()
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
        else:
            if world != 1:
                raise RuntimeError(
                    f"WORLD_SIZE={world} but MASTER_ADDR is unset: launch with torchrun"
                )
            # A world of one without a rendezvous: no port is opened.
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    return DistEnv(rank, dist.get_world_size(), local_rank, device, backend)


# start of the warning destroy_distributed logs when Gloo threads outlive the process group
TEARDOWN_WARNING = "process group still referenced after destroy"


def gloo_worker_threads() -> list[str]:
    """Names of this process's live Gloo threads (``pt_gloo_runloop``, ``gloo_tcp_loop``).

    Read from ``/proc/self/task`` (Linux); empty elsewhere.
    """
    task = Path("/proc/self/task")
    if not task.is_dir():
        return []
    names = []
    for t in task.iterdir():
        try:
            name = (t / "comm").read_text().strip()
        except OSError:  # the thread ended while we looked
            continue
        if name.startswith(("pt_gloo", "gloo_")):
            names.append(name)
    return sorted(names)


def destroy_distributed() -> list[str]:
    """Destroy the process group and make sure its Gloo worker threads are joined.

    Why: a Gloo worker thread drops a finished collective's work object (which holds the
    tensors, Python objects) shortly *after* ``wait()`` has returned to the caller. When the
    process reaches interpreter finalization first, that decref cannot take the GIL, Python ends
    the thread from inside C++ and the process aborts at exit ("terminate called without an
    active exception", SIGABRT; seen about once in 50 2-rank runs). The threads are joined only
    when the last reference to the process group goes, so callers drop theirs (the session, the
    sharded model) before calling this, and the ``gc`` pass here collects reference cycles that
    still hold one. Returns the Gloo threads still alive afterwards (empty when clean); a
    warning names them, since the exit may then abort.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
    # torchrec caches the intra-/cross-host groups it makes for table_row_wise in module globals;
    # they hold Gloo threads like the world group does
    comm = sys.modules.get("torchrec.distributed.comm")
    for name in ("_INTRA_PG", "_CROSS_PG", "_INTRA_PG_2D", "_CROSS_PG_2D"):
        if comm is not None and getattr(comm, name, None) is not None:
            setattr(comm, name, None)
    gc.collect()
    left = gloo_worker_threads()
    # the last Gloo device can go a little after the group: a transport pair still finishing
    # its close on the tcp loop holds the device until the loop hands it back (seen on a loaded
    # CI box as one lone gloo_tcp_loop); wait for that briefly rather than warn
    deadline = time.monotonic() + 5.0
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
        left = gloo_worker_threads()
    if left:
        logging.getLogger("distrec").warning(
            "%s: %d Gloo threads alive (%s); the process may abort at exit",
            TEARDOWN_WARNING,
            len(left),
            ", ".join(sorted(set(left))),
        )
    return left


def setup_logging(
    rank: int, log_dir: str | Path | None = None, name: str = "distrec"
) -> logging.Logger:
    """Log to stderr and ``log_dir/rank<r>.log`` with a ``[rank r]`` prefix on every line."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(f"[rank {rank}] %(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(log_dir) / f"rank{rank}.log")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
