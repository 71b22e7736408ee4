"""Small collectives for evaluation: all-gather of tensors whose first dim differs per rank."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def all_gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's ``t`` [n_r, ...] along dim 0 (rank order); also return the n_r.

    Ranks may hold different n_r (including 0): sizes are exchanged first, tensors padded to the
    largest, gathered, then trimmed.
    """
    world = dist.get_world_size()
    if world == 1:
        return t, [t.shape[0]]
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s.item()) for s in sizes_t]
    m = max(sizes)
    padded = torch.zeros((m, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
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
    if dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
