"""Small collectives for evaluation: all-gather of tensors whose first dim differs per rank."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def comm_device() -> torch.device:
    """Where collective inputs must live: CUDA for nccl, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_same(t: torch.Tensor) -> list[torch.Tensor]:
    """All ranks' ``t`` (same shape everywhere), on ``t``'s device."""
    dev = comm_device()
    x = t.to(dev).contiguous()
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return [o.to(t.device) for o in out]


def all_gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's ``t`` [n_r, ...] along dim 0 (rank order); also return the n_r.

    Ranks may hold different n_r (including 0): sizes are exchanged first, tensors padded to the
    largest, gathered, then trimmed.
    """
    world = dist.get_world_size()
    if world == 1:
        return t, [t.shape[0]]
    sizes = [int(s.item()) for s in all_gather_same(torch.tensor([t.shape[0]]))]
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = all_gather_same(padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)]), sizes


def lists_to_pairs(lists: Sequence[Sequence[int]], row_offset: int = 0) -> torch.Tensor:
    """[P, 2] int64 (row, item) pairs of a ragged list of item lists; row = offset + index."""
    rows = [row_offset + i for i, items in enumerate(lists) for _ in items]
    items = [int(x) for items in lists for x in items]
    if not rows:
        return torch.zeros((0, 2), dtype=torch.int64)
    return torch.stack([torch.tensor(rows), torch.tensor(items, dtype=torch.int64)], dim=1)


def all_gather_pairs(lists: Sequence[Sequence[int]], row_offset: int) -> torch.Tensor:
    """(row, item) pairs of every rank's lists, rows already offset to the gathered query index."""
    pairs, _ = all_gather_rows(lists_to_pairs(lists, row_offset))
    return pairs


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (via the comm device when it is not ``t``'s)."""
    if dist.get_world_size() > 1:
        x = t.to(comm_device())
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        if x is not t:
            t.copy_(x)
    return t
