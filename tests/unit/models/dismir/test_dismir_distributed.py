"""The DisMIR item table (a one-id-per-bag EmbeddingBagCollection) trains under row-wise sharding at 2 gloo ranks
exactly as at 1 rank: same per-step global losses and the same table afterwards.

Real processes (torch.multiprocessing spawn), the engine's shard_model (DMP, explicit row-wise
plan, fused SGD). Ports 29700-29749 belong to this area.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.unit.models.dismir.seq_bundle import write_seq_bundle

REPO = Path(__file__).resolve().parents[4]
STEPS = 4


def _worker(rank: int, world: int, port: int, bundle: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    os.environ.update(LOCAL_WORLD_SIZE=str(world), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from distrec.config import load_config
        from distrec.data.schema import Manifest
        from distrec.distributed.sharding import shard_model
        from distrec.models.dismir import SPEC

        cfg = load_config(
            "dismir",
            str(REPO / "configs/dismir/gowalla.yaml"),
            [
                f"data.bundle={bundle}",
                "data.batch_size=32",
                "model.dim=8",
                "model.max_len=6",
                "model.num_interests=3",
                "model.partition_weight=0.5",
                "model.partition_negatives=10",
                "model.hard_candidates=4",
                "train.sparse_optimizer=sgd",
                "train.sparse_lr=0.5",
                "sharding.default=row_wise",
                "train.l2=0",
            ],
        )
        manifest = Manifest.load(bundle)
        model = SPEC.build_model(cfg, manifest, torch.device("meta"))
        dmp = shard_model(model, cfg, torch.device("cpu"))
        # The same start table at every world size: copy rows of one seeded table into the shards.
        full = torch.empty(manifest.num_items, 8).uniform_(
            -0.3, 0.3, generator=torch.Generator().manual_seed(1)
        )
        key = next(k for k in dmp.state_dict() if k.endswith("embedding_bags.item.weight"))
        for shard in dmp.state_dict()[key].local_shards():
            r0 = shard.metadata.shard_offsets[0]
            shard.tensor.copy_(full[r0 : r0 + shard.tensor.shape[0]])
        data = SPEC.build_data(cfg, bundle, rank, world)
        losses = []
        for step, batch in enumerate(data.train_batches(0)):
            if step == STEPS:
                break
            assert bool((batch.dense["cooc_mask"] > 0).all())  # equal partition means per rank
            loss, _ = dmp(batch)
            loss.backward()  # fused SGD updates the table inside backward
            t = loss.detach().clone()
            dist.all_reduce(t)
            losses.append(t.item() / world)
        rows = {
            s.metadata.shard_offsets[0]: s.tensor.detach().clone()
            for s in dmp.state_dict()[key].local_shards()
        }
        # the evaluator's no-copy path: this rank's slice read from its shard equals the
        # slice looked up through the sharded table
        from distrec.eval.ranking import item_slice

        lo, hi = item_slice(manifest.num_items, rank, world)
        looked_up = dmp.module.item_reps(data.item_batch(torch.arange(lo, hi)))
        local = dmp.module.local_item_rows(lo, hi)
        assert local is not None and torch.equal(local, looked_up)
        torch.save({"losses": losses, "rows": rows}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _collect(world: int, out: Path) -> tuple[list[float], torch.Tensor]:
    parts = [torch.load(out / f"rank{r}.pt") for r in range(world)]
    rows = {k: v for p in parts for k, v in p["rows"].items()}
    return parts[0]["losses"], torch.cat([rows[k] for k in sorted(rows)])


@pytest.mark.timeout(300)
def test_row_wise_two_ranks_match_one_rank(tmp_path: Path) -> None:
    bundle = write_seq_bundle(tmp_path / "b", users=60, items=36, clusters=3, length=(10, 14))
    # Both runs at once: process start-up (torchrec import) dominates the time.
    ctxs = []
    for world, port in ((1, 29711), (2, 29712)):
        (tmp_path / f"w{world}").mkdir()
        args = (world, port, str(bundle), str(tmp_path / f"w{world}"))
        ctxs.append(
            mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
        )
    for ctx in ctxs:
        while not ctx.join():
            pass
    losses1, table1 = _collect(1, tmp_path / "w1")
    losses2, table2 = _collect(2, tmp_path / "w2")
    assert len(losses1) == STEPS
    assert losses1[-1] != losses1[0]  # it trained
    torch.testing.assert_close(torch.tensor(losses2), torch.tensor(losses1), rtol=1e-5, atol=1e-6)
    init = torch.empty(36, 8).uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(table1, init)
    torch.testing.assert_close(table2, table1, rtol=1e-5, atol=1e-6)
