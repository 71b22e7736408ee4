"""LightGCN's data adapter: InteractionData's BPR rows plus what graph propagation needs.

Batch layout (B = this rank's batch, k = negatives, S = bags per key, the same on every rank)::

    Batch.sparse["ebc"]: KJT keys ["user", "pos", "neg"], S bags each of 0 or 1 id:
        user = the user rows to fetch, pos = the item rows to fetch, neg = empty
        full mode: every user and every item (the whole table, each step)
        sampled mode: the outermost frontier of the batch's neighbourhood blocks
    Batch.dense:
        "lookup_n" [2]      (rows fetched for user, item): the real, unpadded bag counts
        "user_idx" [B], "pos_idx" [B], "neg_idx" [B, k]: rows of the propagated tables
            (full: global ids; sampled: slots in the blocks' seed frontier)
        "g.*"               sampled mode only: Blocks.to_dense("g")

A KJT needs the same number of bags under every key, and a row-wise sharded EBC the same number
on every rank, hence the padding to S with empty bags (their pooled rows are zero and are sliced
away by the model). Full mode: S = max(users, items); sampled: the largest frontier of any rank
(agreed with one all-reduce when the batch is assembled: a rank reads only its own rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.bundle import Bundle
from distrec.data.collate import max_over_ranks
from distrec.data.interactions import KEYS, InteractionData
from distrec.data.loader import step_rng
from distrec.graph.adjacency import HeteroGraph, bipartite_from_bundle
from distrec.graph.sampler import Blocks, sample_blocks
from distrec.models.api import Batch

SAMPLE_STREAM = 1  # step_rng stream of neighbour sampling (0 is left to negatives)


def lookup_kjt(
    users: torch.Tensor, items: torch.Tensor, stride: int | None = None
) -> KeyedJaggedTensor:
    """KJT that fetches rows ``users`` [n_u] of table user and ``items`` [n_i] of table item,
    one id per bag, padded with empty bags to S = max(n_u, n_i, stride) bags per key."""
    s = max(len(users), len(items), stride or 0)

    def lengths(n: int) -> torch.Tensor:
        out = torch.zeros(s, dtype=torch.int64)
        out[:n] = 1
        return out

    return KeyedJaggedTensor(
        keys=list(KEYS),
        values=torch.cat([users.to(torch.int64), items.to(torch.int64)]),
        lengths=torch.cat(
            [lengths(len(users)), lengths(len(items)), torch.zeros(s, dtype=torch.int64)]
        ),
    )


class LightGCNData(InteractionData):
    """BPR batches for LightGCN in ``full`` or ``sampled`` graph mode; evaluation as InteractionData
    (the model ranks with fully propagated embeddings cached by ``prepare_eval``).

    Example::

        data = LightGCNData("bundle/", 0, 1, mode="sampled", layers=3, fanout=[10, 10, 10])
        batch = next(iter(data.train_batches(epoch=0)))
    """

    def __init__(
        self,
        bundle: Bundle | str,
        rank: int = 0,
        world_size: int = 1,
        *,
        mode: str = "full",
        layers: int = 3,
        fanout: list[int] | None = None,
        fanout_over: str = "relation",
        max_frontier: int = 0,
        graph: HeteroGraph | None = None,
        graph_behavior: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(bundle, rank, world_size, **kw)
        if mode not in ("full", "sampled"):
            raise ValueError(f"graph.mode: {mode!r} is not one of full, sampled")
        self.mode, self.layers, self.fanout = mode, layers, list(fanout or [])
        self.fanout_over, self.max_frontier = fanout_over, max_frontier
        self.graph = graph
        if mode == "sampled" and graph is None:
            self.graph = bipartite_from_bundle(self.bundle, graph_behavior)
        users = torch.arange(self.num_users, dtype=torch.int64)
        items = torch.arange(self.num_items, dtype=torch.int64)
        self._all_kjt = lookup_kjt(users, items)
        self._all_n = torch.tensor([self.num_users, self.num_items])

    def _sample(
        self, epoch: int, step: int, user: np.ndarray, pos: np.ndarray, neg: np.ndarray
    ) -> Blocks:
        return sample_blocks(
            {"user": user, "item": np.concatenate([pos, neg.reshape(-1)])},
            self.graph,  # type: ignore[arg-type]
            self.layers,
            self.fanout,
            step_rng(self.seed, epoch, step, SAMPLE_STREAM),
            fanout_over=self.fanout_over,
            max_frontier=self.max_frontier,
        )

    def payload(self, epoch: int, step: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        """numpy arrays of this rank's batch for global step ``step``: the BPR triples of
        InteractionData plus, in sampled mode, the neighbourhood blocks of this rank's pairs.
        Runs in the prefetch thread / process, so the sampling stays off the trainer's critical
        path. The lookup stride (the largest frontier of any rank) is agreed in :meth:`to_batch`.
        """
        user, pos, neg = InteractionData.payload(self, epoch, step)
        neg = neg.reshape(user.shape[0], -1)
        if self.mode == "full":
            return {"user_idx": user, "pos_idx": pos, "neg_idx": neg}
        b = user.shape[0]
        mine = self._sample(epoch, step, user, pos, neg)
        fetch = mine.input_nodes()
        seed_item = mine.seed_index["item"].numpy()
        out = {
            "fetch.user": fetch["user"].numpy(),
            "fetch.item": fetch["item"].numpy(),
            "stride": np.array([max(len(fetch["user"]), len(fetch["item"]))]),
            "user_idx": mine.seed_index["user"].numpy(),
            "pos_idx": seed_item[:b],
            "neg_idx": seed_item[b:].reshape(b, -1),
        }
        out.update({k: v.numpy() for k, v in mine.to_dense("g").items()})
        return out

    def to_batch(self, payload: dict[str, np.ndarray]) -> Batch:  # type: ignore[override]
        """The :class:`Batch` (layout in the module docstring) of one :meth:`payload`."""
        dense = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in payload.items()}
        size = int(dense["user_idx"].shape[0])
        if self.mode == "full":
            dense["lookup_n"] = self._all_n
            return Batch(sparse={"ebc": self._all_kjt}, dense=dense, size=size)
        fu, fi = dense.pop("fetch.user"), dense.pop("fetch.item")
        stride = max_over_ranks(int(dense.pop("stride")[0]))
        dense["lookup_n"] = torch.tensor([len(fu), len(fi)])
        return Batch(sparse={"ebc": lookup_kjt(fu, fi, stride)}, dense=dense, size=size)
