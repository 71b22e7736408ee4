"""CIGF's data adapter: multi-behavior BPR batches, and full or sampled evaluation batches.

An epoch runs over the unique target-behavior train pairs (``InteractionData``'s rows, so rank
sharding and world-size-independent global batches come with it); ``all_behavior_epoch`` runs it
over the union of all behaviors' pairs instead. For every row and every behavior k the batch
holds a positive of the row's user under k (the row's item for the target; a uniformly drawn one
of the user's k-items otherwise, masked out when the user has none) and a uniform negative the
user never had under k. Randomness comes from (seed, epoch, global step), so negatives do not
depend on the world size.

Evaluation reuses ``InteractionData`` (full ranking over ``interactions/split=valid|test``,
excluding train buys, plus valid buys on test). ``eval.protocol: sampled`` is the MB-GMN / CIGF
protocol: one held-out item per user against ``model.sampled_eval_negatives`` items the user never
bought; read from ``eval/<split protocol>/`` when the bundle has it, otherwise drawn here
(documented rule: the held-out item is a seeded uniform pick among the user's held-out buys, the
negatives a seeded uniform sample without replacement of items absent from the user's train,
valid and test buys).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.interactions import InteractionData
from distrec.data.loader import Prefetcher, RankShard, rank_slice, step_rng
from distrec.data.sampling import uniform_negatives
from distrec.models.api import Batch, EvalQuery
from distrec.models.cigf.graph import (
    load_behavior_adjacency,
    node_kjt,
    sample_subgraph,
    subgraph_tensors,
)

_SAMPLE_STREAM = 7  # rng stream of neighbourhood sampling (negatives use stream 0)


def resolve_behaviors(requested: list[str], manifest_behaviors: list[str]) -> list[str]:
    """Behaviors in model order (target last); must be a subset of the bundle's, ending with its
    target behavior."""
    behaviors = list(requested) if requested else list(manifest_behaviors)
    unknown = [b for b in behaviors if b not in manifest_behaviors]
    if unknown:
        raise ValueError(f"model.behaviors: {unknown} not in the bundle's {manifest_behaviors}")
    if behaviors[-1] != manifest_behaviors[-1]:
        raise ValueError(
            f"model.behaviors must end with the target behavior {manifest_behaviors[-1]!r}, "
            f"got {behaviors}"
        )
    return behaviors


class CigfData(InteractionData):
    """Batches for :class:`distrec.models.cigf.model.Cigf` on one rank.

    Example::

        data = CigfData("bundle/", 0, 1, batch_size=256, mode="full", layers=2)
        batch = next(iter(data.train_batches(0)))  # dense: user [B], pos/neg/mask [K, B]
    """

    def __init__(
        self,
        bundle: Bundle | str,
        rank: int = 0,
        world_size: int = 1,
        *,
        model_behaviors: list[str] | None = None,
        mode: str = "full",
        layers: int = 2,
        fanout: list[int] | None = None,
        all_behavior_epoch: bool = False,
        sampled_negatives: int = 99,
        **kw: Any,
    ) -> None:
        super().__init__(bundle, rank, world_size, **kw)
        m = self.bundle.manifest
        self.model_behaviors = resolve_behaviors(model_behaviors or [], m.behaviors)
        self.mode, self.layers, self.fanout = mode, layers, list(fanout or [])
        self.sampled_negatives = sampled_negatives
        self._target_rows = not all_behavior_epoch  # epoch rows are target pairs
        self.beh_pos: list[Csr] = []
        for b in self.model_behaviors:
            t = self.bundle.interactions("train", b)
            self.beh_pos.append(
                Csr.from_pairs(t["user"], t["item"], self.num_users, self.num_items)
            )
        if all_behavior_epoch:
            union = Csr.from_pairs(
                np.concatenate([c.sources() for c in self.beh_pos]),
                np.concatenate([c.indices for c in self.beh_pos]),
                self.num_users,
                self.num_items,
            )
            self.train_users, self.train_items = union.sources(), union.indices
            self.shard = RankShard(
                self.train_users.shape[0], self.batch_size, rank, world_size, self.seed
            )
        self.adjs = (
            load_behavior_adjacency(self.bundle, self.model_behaviors)
            if mode == "sampled"
            else None
        )
        self._cands: dict[str, tuple[np.ndarray, list[list[int]], list[list[int]]]] = {}

    @classmethod
    def from_config(
        cls, cfg: Any, bundle_dir: str, rank: int, world_size: int, **kw: Any
    ) -> CigfData:
        return super().from_config(
            cfg,
            bundle_dir,
            rank,
            world_size,
            model_behaviors=cfg.model.behaviors,
            mode=cfg.graph.mode,
            layers=cfg.graph.layers,
            fanout=[f for f in cfg.graph.fanout],
            all_behavior_epoch=cfg.model.all_behavior_epoch,
            sampled_negatives=cfg.model.sampled_eval_negatives,
            **kw,
        )  # type: ignore[return-value]

    # ----------------------------------------------------------------- training
    def build_batch(self, epoch: int, step: int, rows: np.ndarray) -> Batch:
        """This rank's slice of global step ``step`` (``rows`` [G] are the global batch)."""
        rng = step_rng(self.seed, epoch, step)
        users = self.train_users[rows]
        g = users.shape[0]
        k = len(self.model_behaviors)
        pos = np.zeros((k, g), dtype=np.int64)
        neg = np.zeros((k, g), dtype=np.int64)
        mask = np.zeros((k, g), dtype=np.float32)
        for j, csr in enumerate(self.beh_pos):
            deg = csr.degrees()[users]
            pick = csr.indptr[users] + np.floor(rng.random(g) * deg).astype(np.int64)
            has = deg > 0
            if j == k - 1 and self._target_rows:
                pos[j] = self.train_items[rows]  # the row itself is a target pair
                has = np.ones(g, dtype=bool)
            else:
                pos[j, has] = csr.indices[np.minimum(pick[has], csr.nnz - 1)]
            neg[j] = uniform_negatives(users, self.num_items, 1, csr, rng)[:, 0]
            mask[j] = has
        m = self.num_users
        if self.mode == "sampled":
            sub, stride = self._sampled_subgraph(epoch, step, users, pos, neg, mask)
        sl = self.shard.slice
        users, pos, neg, mask = users[sl], pos[:, sl], neg[:, sl], mask[:, sl]
        if self.mode == "full":
            kjt, n_nodes = node_kjt(np.arange(m), np.arange(self.num_items))
            dense = {"user": users, "pos": pos + m, "neg": neg + m}
        else:
            kjt, n_nodes = node_kjt(sub.nodes[sub.nodes < m], sub.nodes[sub.nodes >= m] - m, stride)
            # masked slots point at node 0 of the subgraph; their loss terms are multiplied by 0
            dense = {
                "user": sub.local(users),
                "pos": np.where(mask > 0, sub.local(pos + m), 0),
                "neg": np.where(mask > 0, sub.local(neg + m), 0),
            }
        tensors = {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in dense.items()}
        tensors["mask"] = torch.from_numpy(mask)
        tensors["n_nodes"] = n_nodes
        if self.mode == "sampled":
            tensors.update(subgraph_tensors(sub))
        return Batch(sparse={"ebc": kjt}, dense=tensors, size=int(users.shape[0]))

    def _sampled_subgraph(
        self,
        epoch: int,
        step: int,
        users: np.ndarray,
        pos: np.ndarray,
        neg: np.ndarray,
        mask: np.ndarray,
    ) -> tuple[Any, int]:
        """This rank's neighbourhood of global step ``step`` and the lookup stride of the step.

        ``users`` [G], ``pos`` / ``neg`` / ``mask`` [K, G] are the whole global batch (the same on
        every rank). Ranks sample different subgraphs, and the row-wise sharded lookup exchanges
        ``[stride, .]`` blocks that must be equal everywhere, so every rank also samples the other
        ranks' subgraphs (same per-rank rng streams, hence the same nodes) and pads to the largest
        user or item count among them. That costs ``world_size`` samplings per step (in the
        prefetch thread) instead of padding every lookup to :meth:`sampled_stride`'s worst-case
        bound, which reaches the table size at 10^6 users (2,048 x 9 seeds x 40 x 20 nodes) and
        made each sampled step fetch and exchange every row of the tables.
        """
        m = self.num_users
        mine, stride = None, 1
        for r in range(self.world_size):
            sl = rank_slice(self.shard.global_batch, r, self.world_size)
            u, p, n, k = users[sl], pos[:, sl], neg[:, sl], mask[:, sl]
            seeds = np.concatenate([u, p[k > 0] + m, n[k > 0] + m])
            rng = step_rng(self.seed, epoch, step, _SAMPLE_STREAM + r)
            sub = sample_subgraph(self.adjs or [], seeds, self.layers, self.fanout, rng)
            n_users = int((sub.nodes < m).sum())
            stride = max(stride, n_users, int(sub.nodes.shape[0]) - n_users)
            if r == self.rank:
                mine = sub
        return mine, stride

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This rank's batches of ``epoch`` from ``start_step`` on, built ``prefetch`` steps ahead
        in a background thread (subgraph sampling included)."""
        gen = (
            self.build_batch(epoch, step, rows)
            for step, rows in enumerate(self.shard.global_batches(epoch))
            if step >= start_step
        )
        if self.prefetch <= 0:
            yield from gen
            return
        pf = Prefetcher(gen, depth=self.prefetch)
        self._active = pf
        try:
            yield from pf
        finally:
            pf.close()
            self.wait_seconds += pf.wait_seconds
            self._active = None

    def sampled_stride(self, seeds: int) -> int:
        """Bag count of a sampled-mode *evaluation* lookup, the same on every rank: an upper bound
        on the users / items an L-hop neighbourhood of ``seeds`` nodes can reach under the fanout
        caps (capped by the table sizes; training uses the exact per-step maximum instead, see
        :meth:`_sampled_subgraph`). Ranks sample different subgraphs; equal strides keep the
        row-wise sharded lookup's collectives the same size everywhere."""
        cap = max(self.num_users, self.num_items)
        if not self.fanout or any(f <= 0 for f in self.fanout):
            return cap  # unlimited fanout: no bound below the tables
        reach, frontier = seeds, seeds
        for depth in range(self.layers):  # as sample_subgraph: the last fanout repeats
            frontier *= self.fanout[min(depth, len(self.fanout) - 1)] * len(self.model_behaviors)
            reach += frontier
            if reach >= cap:
                return cap
        return int(reach)

    # --------------------------------------------------------------- evaluation
    def _subgraph_batch(self, nodes: np.ndarray, key: str, rng: np.random.Generator) -> Batch:
        """Sampled-mode evaluation batch: ``nodes`` [B] global node ids and their neighbourhood."""
        m = self.num_users
        sub = sample_subgraph(self.adjs or [], nodes, self.layers, self.fanout, rng)
        stride = self.sampled_stride(max(self.eval_batch_size, self.num_items))
        kjt, n_nodes = node_kjt(sub.nodes[sub.nodes < m], sub.nodes[sub.nodes >= m] - m, stride)
        dense = subgraph_tensors(sub)
        dense["n_nodes"] = n_nodes
        dense["nodes"] = torch.from_numpy(sub.local(nodes))
        return Batch(sparse={"ebc": kjt}, dense=dense, size=int(nodes.shape[0]))

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        for step, q in enumerate(super().eval_queries(split, task)):
            if self.mode == "sampled":
                rng = step_rng(
                    self.seed, 10_000 + (split == "test"), step, _SAMPLE_STREAM + self.rank
                )
                q.batch = self._subgraph_batch(q.ids.numpy(), "user", rng)
            yield q

    def queries_for(self, ids: np.ndarray, task: str = "user") -> Iterator[EvalQuery]:
        for step, q in enumerate(super().queries_for(ids, task)):
            if self.mode == "sampled":
                rng = step_rng(self.seed, 10_002, step, _SAMPLE_STREAM + self.rank)
                q.batch = self._subgraph_batch(q.ids.numpy(), "user", rng)
            yield q

    def item_batch(self, items: torch.Tensor) -> Batch:
        if self.mode != "sampled":
            return super().item_batch(items)
        ids = items.detach().cpu().numpy().astype(np.int64)
        rng = step_rng(self.seed, 20_000, int(ids[0]) if ids.size else 0, _SAMPLE_STREAM)
        return self._subgraph_batch(ids + self.num_users, "pos", rng)

    def _eval_table(self, split: str) -> tuple[np.ndarray, list[list[int]], list[list[int]] | None]:
        if not self.candidates:
            return super()._eval_table(split)
        protocol = self.bundle.manifest.split.get("protocol", "")
        if self.bundle.has_table(f"eval/{protocol}", split):
            return super()._eval_table(split)
        if split not in self._cands:
            self._cands[split] = self._draw_candidates(split)
        return self._cands[split]

    def _draw_candidates(self, split: str) -> tuple[np.ndarray, list[list[int]], list[list[int]]]:
        """One held-out buy per user + ``sampled_negatives`` never-bought items (see module doc)."""
        held = self.heldout(split)
        bought = [self.target_train, self.heldout("valid"), self.heldout("test")]
        users = np.flatnonzero(held.degrees() > 0)
        rng = np.random.default_rng([self.seed, 0xC1, split == "test"])
        targets, cands = [], []
        for u in users:
            own = held.row(int(u))[0]
            t = int(own[rng.integers(0, own.shape[0])])
            seen = np.unique(np.concatenate([c.row(int(u))[0] for c in bought]))
            free = np.setdiff1d(np.arange(self.num_items, dtype=np.int64), seen, assume_unique=True)
            negs = rng.choice(free, size=min(self.sampled_negatives, free.shape[0]), replace=False)
            targets.append([t])
            cands.append([t, *negs.tolist()])
        return users, targets, cands
