"""Consumer-side helpers for building batches on a rank. The one collective the data plane needs:
a rank reads only its own shards, so a size that must match on every rank (the bag count of a
row-wise sharded lookup of a sampled neighbourhood) is agreed on where the batch is assembled,
in the trainer's process, in step order on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def max_over_ranks(n: int) -> int:
    """The largest ``n`` over all ranks (``n`` itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
