"""LightGCN's direct rows (distrec.models.lightgcn.local_shards): the own rows as a view of a fused
TBE's weights, the optimizer's update applied by the model, against the TBE's own VBE call and
fused backward on a copy of the same tables (EXACT_SGD and EXACT_ROWWISE_ADAGRAD, 3 steps)."""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import ComputeDevice, EmbeddingLocation
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    SplitTableBatchedEmbeddingBagsCodegen,
)

from distrec.models.lightgcn.local_shards import LocalShards

N_USER, N_ITEM, D = 7, 5, 4


def _tbe(opt: EmbOptimType) -> SplitTableBatchedEmbeddingBagsCodegen:
    specs = [(n, D, EmbeddingLocation.HOST, ComputeDevice.CPU) for n in (N_USER, N_ITEM)]
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        specs, feature_table_map=[0, 1, 1], optimizer=opt, learning_rate=0.3, eps=1e-6
    )
    g = torch.Generator().manual_seed(0)
    for w in tbe.split_embedding_weights():
        w.copy_(torch.randn(w.shape, generator=g))
    return tbe


@pytest.mark.parametrize("opt", [EmbOptimType.EXACT_SGD, EmbOptimType.EXACT_ROWWISE_ADAGRAD])
@pytest.mark.parametrize("world", [1, 2])
def test_direct_rows_update_equals_the_fused_backward(opt: EmbOptimType, world: int) -> None:
    a, b = _tbe(opt), _tbe(opt)
    ref = LocalShards(a, N_USER, N_ITEM, D, world, direct=False)
    got = LocalShards(b, N_USER, N_ITEM, D, world, direct=True)
    assert ref.direct is None and got.direct is not None  # the path under test is taken
    wts = torch.randn(N_USER + N_ITEM, D, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        outs = []
        for s in (ref, got):
            h = s.rows(torch.device("cpu"))
            outs.append(h.detach().clone())
            ((h * wts).sum() + h.pow(2).sum()).backward()
        torch.testing.assert_close(outs[1], outs[0])
    for x, y in zip(b.split_embedding_weights(), a.split_embedding_weights(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    if opt == EmbOptimType.EXACT_ROWWISE_ADAGRAD:
        for x, y in zip(b.split_optimizer_states(), a.split_optimizer_states(), strict=True):
            torch.testing.assert_close(x[0], y[0], rtol=1e-5, atol=1e-7)
