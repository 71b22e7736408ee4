"""One lookup of a batch's *distinct* ids through a one-feature, SUM-pooled
EmbeddingBagCollection: one bag per distinct id.

A sequence batch reads the same item table through several features (history, target,
negatives, co-occurrence samples), many ids repeated, so the ids are deduplicated first, looked
up once, and gathered back; the gradient of the gather sums the repeats into the row, which is
what the fused "exact" optimisers do with repeated ids anyway.

Why bags and not an EmbeddingCollection (issue #16): fbgemm's CPU backward for *unpooled*
tables (``split_embedding_nobag_backward_*_cpu``) keeps a hash map of per-row heap buffers, and
costs 47-100 ms per 8k distinct rows of a 500k x 64 table, whatever the optimiser; the pooled
backward sorts the ids (csr2csc) and for row-wise Adagrad runs fbgemm's vectorised SparseAdaGrad:
1 ms for the same rows, 27 ms with per-element Adagrad, 14 ms with SGD (``/tmp`` micro-benchmark,
2026-12-03, one thread, load 13). A bag holding one id pools to that id's row, so forward
values and the table's gradient are those of the unpooled lookup.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

ITEM_KEY = "item"


def item_bag_table(
    name: str, num_rows: int, dim: int, bound: float, device: torch.device | None = None
) -> EmbeddingBagCollection:
    """The item table [num_rows, dim] as a one-feature (``ITEM_KEY``) SUM-pooled
    EmbeddingBagCollection, initialised uniform(-bound, bound)."""
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=name,
                embedding_dim=dim,
                num_embeddings=num_rows,
                feature_names=[ITEM_KEY],
                pooling=PoolingType.SUM,
                weight_init_min=-bound,
                weight_init_max=bound,
                init_fn=lambda w: torch.nn.init.uniform_(w, -bound, bound),
            )
        ],
        device=device,
    )


def _num_bags(ebc: torch.nn.Module, n: int) -> int:
    """Bags of this call: n, or for a sharded table the largest n of all ranks (the pooled
    output dist of TorchRec's sharded EBC needs the same batch on every rank; one small
    all-reduce), and at least one (a sharded table needs a call from every rank)."""
    if isinstance(ebc, ShardedEmbeddingBagCollection) and dist.is_initialized():
        pg = ebc._env.process_group  # the group the table is sharded over
        if dist.get_world_size(pg) > 1:
            t = torch.tensor([n], dtype=torch.int64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=pg)
            n = int(t.item())
    return max(n, 1)


def lookup_ids(ebc: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Rows [n, D] of ``ids`` (int64 [n]) through ``ebc`` (:func:`item_bag_table`, sharded or
    not): bag i < n holds ``ids[i]`` alone; the padding bags (:func:`_num_bags`) are empty,
    pool to zeros and give no gradient."""
    n = ids.numel()
    lengths = torch.zeros(_num_bags(ebc, n), dtype=torch.int32)
    lengths[:n] = 1
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[ITEM_KEY], values=ids, lengths=lengths)
    return ebc(kjt)[ITEM_KEY][:n]


def unique_lookup(
    ebc: torch.nn.Module,
    kjt: KeyedJaggedTensor,
    only: tuple[str, ...] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Embeddings of the keys of ``kjt`` (ids of the one table of ``ebc``) as
    ``{key: values [nnz_key, D]}`` in the KJT's order; lengths/offsets stay those of ``kjt``.
    One lookup, which sees each distinct id once. ``only``: just these keys (the others are
    left out); ``extra``: more named id sets (int64 [n]) looked up in the same call."""
    named = [(k, kjt[k].values()) for k in kjt.keys() if only is None or k in only]
    named += list((extra or {}).items())
    values = torch.cat([v for _, v in named]) if named else kjt.values()[:0]
    uniq, inverse = torch.unique(values, return_inverse=True)
    # index_select, not rows[inverse]: the advanced-indexing gather and its accumulate-scatter
    # backward cost several times more on CPU
    rows = lookup_ids(ebc, uniq).index_select(0, inverse)  # [nnz, D]
    out: dict[str, torch.Tensor] = {}
    start = 0
    for k, v in named:
        out[k] = rows[start : start + v.numel()]
        start += v.numel()
    return out


__all__ = ["ITEM_KEY", "item_bag_table", "lookup_ids", "unique_lookup"]
