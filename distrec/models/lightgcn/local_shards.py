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

Direct rows (``model.direct_rows``, where it applies): the VBE call on CPU costs far more than its rows
(6.1 of 8.9 s CPU of a batch-2^17 step at W = 1 on scale_mb, and 1.27 GB of fresh pages:
docs/results/graph_scale.md), and it only copies the shard's weights. So :meth:`LocalShards.rows`
returns a view of the weights themselves (user rows then item rows are adjacent in the TBE's
buffer) and the backward applies the table optimizer's update to every local row itself, the one
FBGEMM's fused backward would apply: EXACT_SGD, or EXACT_ROWWISE_ADAGRAD without weight decay,
clipping or max-norm (the momentum is the TBE's own state, so checkpoints and the KJT path see the
same tables). Any other optimizer or layout keeps the VBE call.

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


def _direct_view(tbe: torch.nn.Module, n: int, dim: int) -> tuple[torch.Tensor, str] | None:
    """(the [n, dim] view of both tables' weights, optimizer) when this TBE's update is one this
    module applies itself (module docstring: direct rows), else None."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode

    opt = {EmbOptimType.EXACT_SGD: "sgd", EmbOptimType.EXACT_ROWWISE_ADAGRAD: "rowwise_adagrad"}
    name = opt.get(getattr(tbe, "optimizer", None))  # type: ignore[call-overload]
    args = getattr(tbe, "optimizer_args", None)
    if name is None or args is None or args.gradient_clipping or args.weight_decay != 0:
        return None
    if getattr(args, "max_norm", 0.0) > 0:  # FBGEMM would renormalise the updated rows
        return None
    if getattr(tbe, "weight_decay_mode", WeightDecayMode.NONE) != WeightDecayMode.NONE:
        return None
    try:
        w = tbe.split_embedding_weights()  # type: ignore[operator]
    except (AttributeError, RuntimeError, NotImplementedError):
        return None
    if len(w) != 2 or any(x.dtype != torch.float32 or x.shape[1] != dim for x in w):
        return None
    if w[0].shape[0] + w[1].shape[0] != n or not all(x.is_contiguous() for x in w):
        return None
    # user rows then item rows, adjacent in one buffer: one [n, dim] view, no copy
    if w[1].numel() and w[0].numel() and w[1].data_ptr() != w[0].data_ptr() + w[0].numel() * 4:
        return None
    base = w[0] if w[0].numel() else w[1]
    view = base.as_strided((n, dim), (dim, 1))
    if name == "rowwise_adagrad":
        states = tbe.split_optimizer_states()  # type: ignore[operator]
        if any(len(st) != 1 for st in states):  # counters / prev_iter: not handled here
            return None
    return view, name


class _DirectRows(torch.autograd.Function):
    """Forward: the weights' view (no copy); backward: the fused optimizer's update of those rows
    with the gradient divided by ``world``, then no gradient further (the anchor's is None)."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, shards: LocalShards) -> torch.Tensor:  # type: ignore[override]
        ctx.shards = shards
        assert shards.direct is not None
        return shards.direct[0].detach().view_as(shards.direct[0])

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        ctx.shards.apply_update(g)
        return None, None


class LocalShards:
    """This rank's rows of tables ``user`` and ``item`` through the shard's TBE.

    ``rows(device)`` -> [n_user + n_item, D] (own users, then own items), differentiable: the
    backward updates the rows with the table's fused optimizer, with the gradient divided by
    ``world`` as TorchRec's collectives divide it (module docstring).
    """

    def __init__(
        self,
        tbe: torch.nn.Module,
        n_user: int,
        n_item: int,
        dim: int,
        world: int = 1,
        direct: bool = True,
    ) -> None:
        self.tbe, self.n_user, self.n_item, self.dim = tbe, n_user, n_item, dim
        self.world = world if get_gradient_division() else 1
        n = n_user + n_item
        self.direct = _direct_view(tbe, n, dim) if direct else None
        self._anchor = torch.zeros(0, requires_grad=True)  # gives the direct view a backward
        self.eps = float(getattr(getattr(tbe, "optimizer_args", None), "eps", 0.0))
        # local row ids: table user rows 0..n_user-1, then table item rows 0..n_item-1
        self.indices = torch.cat([torch.arange(n_user), torch.arange(n_item)])
        self.offsets = torch.arange(n + 1)  # one row per bag; neg has no bags
        self.batch_sizes = [[n_user], [n_item], [0]]

    def rows(self, device: torch.device) -> torch.Tensor:
        if self.direct is not None:
            return _DirectRows.apply(self._anchor, self)
        if self.indices.device != device:
            self.indices, self.offsets = self.indices.to(device), self.offsets.to(device)
        out = self.tbe(self.indices, self.offsets, batch_size_per_feature_per_rank=self.batch_sizes)
        out = out.view(self.n_user + self.n_item, self.dim)  # VBE output is feature-major
        return _DivGrad.apply(out, self.world) if self.world > 1 else out

    @torch.no_grad()
    def apply_update(self, g: torch.Tensor) -> None:
        """The TBE's own update of every local row for gradient ``g`` [n, D] (divided by W):
        EXACT_SGD ``w -= lr g``; EXACT_ROWWISE_ADAGRAD ``m += mean_D(g^2)``,
        ``w -= lr g / (sqrt(m) + eps)`` (FBGEMM's rowwise Adagrad without weight decay)."""
        assert self.direct is not None
        w, name = self.direct
        g = g / self.world if self.world > 1 else g
        lr = float(self.tbe.get_learning_rate())  # type: ignore[operator]
        if name == "sgd":
            w.add_(g, alpha=-lr)
            return
        states = self.tbe.split_optimizer_states()  # type: ignore[operator]
        parts = [st[0].view(-1) for st in states]  # [rows] per table (views)
        sq = g.pow(2).mean(1)  # [n]
        lo = 0
        for mom in parts:
            mom.add_(sq[lo : lo + mom.numel()])
            lo += mom.numel()
        m = torch.cat(parts)  # [n]
        w.addcdiv_(g, (m.sqrt() + self.eps).unsqueeze(1), value=-lr)


def local_shards(ebc: Any, part: NodePartition, direct: bool = True) -> LocalShards | None:
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
    return LocalShards(tbe, u_hi - u_lo, i_hi - i_lo, dims.pop(), part.world, direct)
