"""Sharding-independent initialisation of embedding tables.

DMP initialises each rank's shard with that rank's RNG, so a 2-rank run would start from other
weights than a 1-rank run. Here every table is re-initialised in fixed row blocks, each drawn from
a generator seeded by (seed, table, block): a rank draws only the blocks that overlap its shard,
and the resulting table is identical at any world size or sharding.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from distrec.distributed.sharding import embedding_modules

BLOCK_ROWS = 65536


def table_specs(
    model: nn.Module,
) -> dict[str, tuple[int, int, Callable[[torch.Tensor], None] | None]]:
    """State-dict key suffix of every table weight -> (rows, dim, init_fn), from the unsharded model."""
    out = {}
    for fqn, m in embedding_modules(model).items():
        prefix = f"{fqn}." if fqn else ""
        if isinstance(m, EmbeddingBagCollection):
            for c in m.embedding_bag_configs():
                out[f"{prefix}embedding_bags.{c.name}.weight"] = (
                    c.num_embeddings,
                    c.embedding_dim,
                    c.init_fn,
                )
        else:
            for c in m.embedding_configs():
                out[f"{prefix}embeddings.{c.name}.weight"] = (
                    c.num_embeddings,
                    c.embedding_dim,
                    c.init_fn,
                )
    return out


def _block(key: str, seed: int, b: int, rows: int, dim: int, init_fn) -> torch.Tensor:  # noqa: ANN001
    digest = hashlib.sha256(f"{seed}/{key}/{b}".encode()).digest()
    state = torch.random.get_rng_state()
    torch.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    n = min(BLOCK_ROWS, rows - b * BLOCK_ROWS)
    t = torch.empty(n, dim)
    if init_fn is not None:
        init_fn(t)
    else:  # torchrec's default
        bound = math.sqrt(1.0 / rows)
        t.uniform_(-bound, bound)
    torch.random.set_rng_state(state)
    return t


def _fill(
    dst: torch.Tensor, key: str, seed: int, r0: int, c0: int, rows: int, dim: int, init_fn
) -> None:  # noqa: ANN001
    """Write rows [r0, r0+len(dst)) x cols [c0, c0+dst.shape[1]) of the table into ``dst``."""
    r1 = r0 + dst.shape[0]
    for b in range(r0 // BLOCK_ROWS, math.ceil(r1 / BLOCK_ROWS) if r1 > r0 else 0):
        blk = _block(key, seed, b, rows, dim, init_fn)
        lo, hi = max(r0, b * BLOCK_ROWS), min(r1, b * BLOCK_ROWS + blk.shape[0])
        src = blk[lo - b * BLOCK_ROWS : hi - b * BLOCK_ROWS, c0 : c0 + dst.shape[1]]
        dst[lo - r0 : hi - r0].copy_(src.to(dst.dtype))


@torch.no_grad()
def init_tables(
    sharded: nn.Module, specs: dict[str, tuple[int, int, Callable | None]], seed: int
) -> int:
    """Re-initialise every table of ``sharded`` (a DMP) in place; returns the number of tables."""
    done = 0
    for name, t in sharded.state_dict().items():
        key = next((k for k in specs if name == k or name.endswith("." + k)), None)
        if key is None:
            continue
        rows, dim, init_fn = specs[key]
        if isinstance(t, ShardedTensor):
            for shard in t.local_shards():
                r0, c0 = shard.metadata.shard_offsets
                _fill(shard.tensor, key, seed, r0, c0, rows, dim, init_fn)
        else:
            _fill(t, key, seed, 0, 0, rows, dim, init_fn)
        done += 1
    return done
