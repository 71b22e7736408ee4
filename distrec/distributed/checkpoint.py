"""Sharded, atomic checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<run.dir>/checkpoints/``::

    step-<n>/        DCP files of {"model", "optim"} + meta.json (step, epoch, data position...)
    latest, best     one line each: the directory name of the checkpoint they point to

Atomicity: all ranks write into ``.tmp-step-<n>/``; after a barrier rank 0 adds meta.json, renames
the directory to ``step-<n>`` and only then replaces the ``latest`` pointer (write + os.replace).
A kill at any point leaves ``latest`` naming a complete checkpoint. DCP stores global shard
metadata, so a checkpoint loads into a different world size or sharding.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

META = "meta.json"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _write_pointer(root: Path, name: str, target: str) -> None:
    tmp = root / f".{name}.tmp"
    with open(tmp, "w") as f:
        f.write(target + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / name)


def read_pointer(run_dir: str | Path, name: str = "latest") -> Path | None:
    """The checkpoint directory named by pointer ``name`` (``latest``/``best``), if complete."""
    root = checkpoint_root(run_dir)
    p = root / name
    if not p.exists():
        return None
    d = root / p.read_text().strip()
    return d if (d / META).exists() else None


def _state(model: nn.Module, optimizer: Any | None) -> dict[str, Any]:
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    return state


def _materialize_dense_state(optimizer: Any) -> None:
    """Create the lazy state of the dense optimizers (Adam moments, step) before a load.

    Why: DCP loads *into* the tensors of the state dict it is given, and a fresh torch optimizer
    has no state until its first step, so without this the saved Adam moments are silently
    dropped on ``--resume`` and training continues from zero moments (not an exact resume).
    ``init_state`` takes one step on zero gradients; the parameters it may move (weight decay)
    are overwritten by the load that follows. The fused sparse optimizer's state is eager.
    """
    parts = optimizer.optimizers if isinstance(optimizer, CombinedOptimizer) else [("", optimizer)]
    for _, opt in parts:
        if isinstance(opt, KeyedOptimizerWrapper) and not opt.state:
            opt.init_state()
            for p in opt.params.values():
                p.grad = None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: Any | None,
    meta: dict[str, Any],
    keep: int = 2,
    best: bool = False,
) -> float:
    """Save on every rank (collective); returns the seconds it took. ``meta`` is JSON (rank 0)."""
    t0 = time.perf_counter()
    root = checkpoint_root(run_dir)
    name = f"step-{step}"
    tmp = root / f".tmp-{name}"
    rank = dist.get_rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    dcp.save(_state(model, optimizer), checkpoint_id=str(tmp))
    dist.barrier()
    if rank == 0:
        with open(tmp / META, "w") as f:
            json.dump({**meta, "step": step, "world_size": dist.get_world_size()}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if best:
            _write_pointer(root, "best", name)
        _write_pointer(root, "latest", name)
        _prune(root, keep)
    dist.barrier()
    return time.perf_counter() - t0


def mark_best(run_dir: str | Path, step: int) -> None:
    """Point ``best`` at an existing checkpoint (rank 0 writes; call on every rank)."""
    if dist.get_rank() == 0:
        _write_pointer(checkpoint_root(run_dir), "best", f"step-{step}")
    dist.barrier()


def _prune(root: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints plus those ``latest``/``best`` point to."""
    pinned = {(root / p).read_text().strip() for p in ("latest", "best") if (root / p).exists()}
    steps = sorted((int(d.name.split("-")[1]), d) for d in root.glob("step-*") if d.is_dir())
    for _, d in steps[: max(0, len(steps) - keep)]:
        if d.name not in pinned:
            shutil.rmtree(d, ignore_errors=True)
    for d in root.glob(".tmp-step-*"):  # leftovers of killed runs
        shutil.rmtree(d, ignore_errors=True)


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: Any | None) -> dict[str, Any]:
    """Load a checkpoint directory into ``model`` (and ``optimizer``) in place; returns its meta.

    Works across world sizes: DCP reads each rank's shards from the global layout.
    """
    path = Path(path)
    if optimizer is not None:
        _materialize_dense_state(optimizer)
    state = _state(model, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    with open(path / META) as f:
        return json.load(f)
