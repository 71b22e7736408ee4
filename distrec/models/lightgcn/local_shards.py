"""Owned full mode's layer-0 rows read straight from this rank's fused table shards.

Under row-wise sharding a rank's own users and items (:class:`distrec.graph.partition.
NodePartition`) are exactly its local shards of the ``user`` and ``item`` tables, and owned full
propagation needs every one of them, in order, every step. Going through the sharded
EmbeddingBagCollection for that costs far more than the rows: a KJT needs one stride for all three
keys (``user``, ``pos``, ``neg``), so the lookup pools ``3 x max(n_user, n_item)`` bags (at W = 1 on
``scale_mb``: 3 x 10^6 bags for 1.1 x 10^6 rows), reduce-scatters the pooled ``[W x S, 3 D]``
block, and the model slices it back (the backward zero-fills and copies each slice); that was the
largest part of a full-mode step in the profile (docs/results/graph_scale.md).

:class:`LocalShards` instead calls the shard's fused TBE (FBGEMM ``SplitTableBatchedEmbeddingBags
Codegen``, the module that owns the weights and applies the fused optimizer in its backward)
with a variable batch per feature: ``n_user`` bags of ``user``, ``n_item`` of ``pos``, none of
``neg``, one local row per bag. Its output is the [n_user + n_item, D] block of own rows in local
order; its backward runs the same fused optimizer update TorchRec's lookup would (same rows,
same gradients), and nothing crosses ranks.

Gradient scale: TorchRec's sharded lookup divides the gradients its collectives carry back by the
world size (``torchrec.distributed.comm_ops.GRADIENT_DIVISION``, on by default), so a table row
gets the gradient of the mean of the rank losses, as DDP's averaging gives the dense parameters.
Rows read here cross no TorchRec collective, so :meth:`LocalShards.rows` divides their gradient
by the same W itself; without it every update was W times too large (the 1.5e-4 drift of the
2-rank SGD curve; row-wise Adagrad nearly hides it, since it normalises the gradient).
"""

from __future__ import annotations

from typing import Any

import torch
from torchrec.distributed.comm_ops import get_gradient_division

from distrec.graph.partition import NodePartition


class _DivGrad(torch.autograd.Function):
    """Identity forward; backward divides the gradient by ``world``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, world: int) -> torch.Tensor:  # type: ignore[override]
        ctx.world = world
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return g / ctx.world, None


class LocalShards:
    """This rank's rows of tables ``user`` and ``item`` through the shard's TBE.

    ``rows(device)`` -> [n_user + n_item, D] (own users, then own items), differentiable: the
    backward updates the rows with the table's fused optimizer, with the gradient divided by
    ``world`` as TorchRec's collectives divide it (module docstring).
    """

    def __init__(
        self, tbe: torch.nn.Module, n_user: int, n_item: int, dim: int, world: int = 1
    ) -> None:
        self.tbe, self.n_user, self.n_item, self.dim = tbe, n_user, n_item, dim
        self.world = world if get_gradient_division() else 1
        n = n_user + n_item
        # local row ids: table user rows 0..n_user-1, then table item rows 0..n_item-1
        self.indices = torch.cat([torch.arange(n_user), torch.arange(n_item)])
        self.offsets = torch.arange(n + 1)  # one row per bag; neg has no bags
        self.batch_sizes = [[n_user], [n_item], [0]]

    def rows(self, device: torch.device) -> torch.Tensor:
        if self.indices.device != device:
            self.indices, self.offsets = self.indices.to(device), self.offsets.to(device)
        out = self.tbe(self.indices, self.offsets, batch_size_per_feature_per_rank=self.batch_sizes)
        out = out.view(self.n_user + self.n_item, self.dim)  # VBE output is feature-major
        return _DivGrad.apply(out, self.world) if self.world > 1 else out


def local_shards(ebc: Any, part: NodePartition) -> LocalShards | None:
    """The :class:`LocalShards` of a row-wise sharded, fused ``ebc`` whose shards are ``part``'s
    own rows; None for anything else (a plain EBC: one process without DMP, another sharding
    type, a non-fused table), where the model keeps the KJT lookup."""
    lookups = getattr(ebc, "_lookups", None)
    if not lookups or len(lookups) != 1:
        return None
    lookup = getattr(lookups[0], "_embedding_lookup", lookups[0])
    mods = getattr(lookup, "_emb_modules", None)
    if not mods or len(mods) != 1 or not hasattr(mods[0], "_emb_module"):
        return None
    config, tbe = mods[0]._config, mods[0]._emb_module
    tables = config.embedding_tables
    if [t.name for t in tables] != ["user", "item"]:
        return None
    if [f for t in tables for f in t.feature_names] != ["user", "pos", "neg"]:
        return None
    if list(getattr(tbe, "feature_table_map", [0, 1, 1])) != [0, 1, 1]:
        return None
    for t, typ in zip(tables, ("user", "item"), strict=True):
        lo, hi = part.range(typ)
        meta = t.local_metadata
        if meta is None or int(meta.shard_offsets[0]) != lo or int(t.local_rows) != hi - lo:
            return None
        if int(meta.shard_offsets[1]) != 0:  # a column shard: not all of D here
            return None
    dims = {int(t.local_cols) for t in tables}
    if len(dims) != 1:
        return None
    u_lo, u_hi = part.range("user")
    i_lo, i_hi = part.range("item")
    return LocalShards(tbe, u_hi - u_lo, i_hi - i_lo, dims.pop(), part.world)
