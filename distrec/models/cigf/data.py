"""CIGF's data adapter: multi-behavior BPR batches, and full or sampled evaluation batches.

An epoch runs over the unique target-behavior train pairs (``InteractionData``'s rank-partitioned
stream, so world-size-independent global batches come with it); ``all_behavior_epoch`` runs it
over the union of all behaviors' pairs instead. Every shuffle window also holds each model
behavior's positives of its users (``pos_behaviors``), so nothing outside the rank's shards is read. For every row and every behavior k the batch
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
from distrec.data.collate import max_over_ranks
from distrec.data.csr import Csr
from distrec.data.interactions import NEG_STREAM, InteractionData
from distrec.data.loader import step_rng
from distrec.data.sampling import uniform_negatives
from distrec.data.stream import ShardSlice
from distrec.models.api import Batch, EvalQuery
from distrec.models.cigf.graph import (
    behavior_graph,
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
        fanout_over: str = "relation",
        max_frontier: int = 0,
        **kw: Any,
    ) -> None:
        b = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        self.model_behaviors = resolve_behaviors(model_behaviors or [], b.manifest.behaviors)
        super().__init__(
            b,
            rank,
            world_size,
            behaviors=list(self.model_behaviors) if all_behavior_epoch else None,
            pos_behaviors=self.model_behaviors,
            **kw,
        )
        self.mode, self.layers, self.fanout = mode, layers, list(fanout or [])
        self.fanout_over, self.max_frontier = fanout_over, max_frontier
        self.sampled_negatives = sampled_negatives
        self._target_rows = not all_behavior_epoch  # epoch rows are target pairs
        self._full_kjt: tuple[Any, torch.Tensor] | None = None
        self.adjs = (
            load_behavior_adjacency(self.bundle, self.model_behaviors)
            if mode == "sampled"
            else None
        )
        self.graph = behavior_graph(self.adjs) if self.adjs is not None else None
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
            fanout_over=cfg.graph.fanout_over,
            max_frontier=cfg.graph.max_frontier,
            **kw,
        )  # type: ignore[return-value]

    # ----------------------------------------------------------------- training
    def _shard_part(
        self, part: ShardSlice, epoch: int, step: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pos / neg int64 [K, q] and mask float32 [K, q] of one shard's pairs: for behavior k a
        positive of the user under k (the pair's item for the target) and a uniform negative the
        user never had under k, drawn from the shard's (seed, epoch, step) stream."""
        rng = step_rng(self.seed, epoch, step, NEG_STREAM + part.shard)
        g = part.users.shape[0]
        k = len(self.model_behaviors)
        pos = np.zeros((k, g), dtype=np.int64)
        neg = np.zeros((k, g), dtype=np.int64)
        mask = np.zeros((k, g), dtype=np.float32)
        for j, b in enumerate(self.model_behaviors):
            csr = part.window.pos[b] if g else Csr.from_pairs(part.local, part.local, 0, 1)
            deg = csr.degrees()[part.local]
            pick = csr.indptr[part.local] + np.floor(rng.random(g) * deg).astype(np.int64)
            has = deg > 0
            if j == k - 1 and self._target_rows:
                pos[j] = part.items  # the row itself is a target pair
                has = np.ones(g, dtype=bool)
            else:
                pos[j, has] = csr.indices[np.minimum(pick[has], csr.nnz - 1)]
            neg[j] = uniform_negatives(part.local, self.num_items, 1, csr, rng)[:, 0]
            mask[j] = has
        return pos, neg, mask

    def payload(self, epoch: int, step: int) -> dict[str, Any]:  # type: ignore[override]
        """This rank's arrays of global step ``step`` (its shards' pairs); in sampled mode also
        its neighbourhood. Runs in the prefetch thread; the KJT is built in :meth:`to_batch`."""
        parts = self.stream.step_slices(epoch, step)
        got = [self._shard_part(p, epoch, step) for p in parts]
        users = np.concatenate([p.users for p in parts])
        pos = np.concatenate([x[0] for x in got], axis=1)
        neg = np.concatenate([x[1] for x in got], axis=1)
        mask = np.concatenate([x[2] for x in got], axis=1)
        m = self.num_users
        if self.mode == "full":
            return {"user": users, "pos": pos + m, "neg": neg + m, "mask": mask}
        seeds = np.concatenate([users, pos[mask > 0] + m, neg[mask > 0] + m])
        # one stream for every rank: a node's draws depend only on (step, node), so this rank's
        # seeds see the edges one rank sampling the whole batch would draw
        rng = step_rng(self.seed, epoch, step, _SAMPLE_STREAM)
        sub = self._neighbourhood(seeds, rng)
        n_users = int((sub.nodes < m).sum())
        # masked slots point at node 0 of the subgraph; their loss terms are multiplied by 0
        return {
            "user": sub.local(users),
            "pos": np.where(mask > 0, sub.local(pos + m), 0),
            "neg": np.where(mask > 0, sub.local(neg + m), 0),
            "mask": mask,
            "sub": sub,
            "stride": max(1, n_users, int(sub.nodes.shape[0]) - n_users),
        }

    def _neighbourhood(self, seeds: np.ndarray, rng: np.random.Generator) -> Any:
        """The L-hop sampled subgraph of ``seeds`` (node ids) through the one sampler."""
        assert self.graph is not None
        return sample_subgraph(
            self.graph, seeds, self.layers, self.fanout, rng, self.fanout_over, self.max_frontier
        )

    def to_batch(self, payload: dict[str, Any]) -> Batch:  # type: ignore[override]
        """The :class:`Batch` of one :meth:`payload`. Sampled mode pads the lookup to the largest
        user or item count of any rank this step (one all-reduce: the row-wise sharded lookup
        exchanges ``[stride, .]`` blocks that must be equal everywhere)."""
        m = self.num_users
        if self.mode == "full":  # the same every step: built once
            if self._full_kjt is None:
                self._full_kjt = node_kjt(np.arange(m), np.arange(self.num_items))
            kjt, n_nodes = self._full_kjt
        else:
            sub = payload["sub"]
            stride = max_over_ranks(int(payload["stride"]))
            kjt, n_nodes = node_kjt(sub.nodes[sub.nodes < m], sub.nodes[sub.nodes >= m] - m, stride)
        tensors = {
            key: torch.from_numpy(np.ascontiguousarray(payload[key]))
            for key in ("user", "pos", "neg", "mask")
        }
        tensors["n_nodes"] = n_nodes
        if self.mode == "sampled":
            tensors.update(subgraph_tensors(payload["sub"]))
        return Batch(sparse={"ebc": kjt}, dense=tensors, size=int(tensors["user"].shape[0]))

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
        sub = self._neighbourhood(nodes, rng)
        stride = self.sampled_stride(max(self.eval_batch_size, self.num_items))
        kjt, n_nodes = node_kjt(sub.nodes[sub.nodes < m], sub.nodes[sub.nodes >= m] - m, stride)
        dense = subgraph_tensors(sub)
        dense["n_nodes"] = n_nodes
        dense["nodes"] = torch.from_numpy(sub.local(nodes))
        return Batch(sparse={"ebc": kjt}, dense=dense, size=int(nodes.shape[0]))

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        for q in super().eval_queries(split, task):
            if self.mode == "sampled":
                # one salt set per split, not per step: a query's neighbourhood draws then depend
                # only on the node, whichever rank and eval step it lands in (ranks evaluate
                # their own users, so the steps hold other users at another world size)
                rng = step_rng(self.seed, 10_000 + (split == "test"), 0, _SAMPLE_STREAM)
                q.batch = self._subgraph_batch(_query_users(q), "user", rng)
            yield q

    def queries_for(self, ids: np.ndarray, task: str = "user") -> Iterator[EvalQuery]:
        for q in super().queries_for(ids, task):
            if self.mode == "sampled":
                rng = step_rng(self.seed, 10_002, 0, _SAMPLE_STREAM)  # per node, as eval_queries
                q.batch = self._subgraph_batch(_query_users(q), "user", rng)
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
        held = self.heldout(split)  # this rank's users, local rows (row k = user eval_lo + k)
        bought = [self.target_train, self.heldout("valid"), self.heldout("test")]
        local = np.flatnonzero(held.degrees() > 0)
        targets, cands = [], []
        for u in local:
            # one stream per user: the draws do not depend on which rank owns the user
            rng = np.random.default_rng([self.seed, 0xC1, split == "test", int(u) + self.eval_lo])
            own = held.row(int(u))[0]
            t = int(own[rng.integers(0, own.shape[0])])
            seen = np.unique(np.concatenate([c.row(int(u))[0] for c in bought]))
            free = np.setdiff1d(np.arange(self.num_items, dtype=np.int64), seen, assume_unique=True)
            negs = rng.choice(free, size=min(self.sampled_negatives, free.shape[0]), replace=False)
            targets.append([t])
            cands.append([t, *negs.tolist()])
        return local + self.eval_lo, targets, cands


def _query_users(q: EvalQuery) -> np.ndarray:
    """The users a query batch looks up [b], or its one padding user when this rank has no
    query in the step (see :func:`distrec.data.interactions.query_batch`): the subgraph
    propagation needs at least one seed node."""
    return q.batch.sparse["ebc"]["user"].values().numpy()
