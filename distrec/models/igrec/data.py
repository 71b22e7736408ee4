"""IGRec's data adapter: BPR triples for the user and the group task, and both tasks' queries.

Rank-partitioned and streamed (#15): the user-item train pairs come from ``graphs/ui.<target>``
and the group-item ones from ``graphs/group_item`` (both partitioned and sorted by src range)
through :mod:`distrec.data.stream`: P virtual shards of users (groups), shard v run by rank
v % W, fragment shuffle plus a bounded shuffle buffer, global step t = shard v's quota of its
stream's pairs t for every v (past a shard's end: its wrap-around fill). Rank r reads only its
shards' rows; the global batch of a step is the same set of pairs at any world size with
P % W == 0, negatives drawn per (seed, epoch, step, shard) against the pair's positives in the
shard's window. Steps = ceil(train pairs / data.batch_size), from Parquet footers (no
collective); shard v's quota is ceil(n_v / steps) (:func:`balanced_stream`), for the group
stream too, so every pair is seen once an epoch and the fill is under one quota per shard.

Every training step carries the full-table KJT in ``full`` graph mode plus index tensors in
``Batch.dense``: ``users, pos`` [b], ``neg`` [b, K], ``groups, gpos`` [bg], ``gneg`` [bg, K] and
``seed`` [] (Gumbel noise and member sampling of this step). The loss denominators
``dense["norm"]`` are the global batch sizes / W, so the mean of the per-rank losses is the
global batch's mean.

``sampled`` graph mode (:mod:`distrec.models.igrec.sampled`): each rank samples the neighbourhood
of its own slice only (the sampler holds the whole graph: replicated, as LightGCN's sampled
mode); the KJT looks up that neighbourhood's rows (``lookup_n`` [tables] real bags per key),
padded to the step's largest lookup over all ranks (one all-reduce here, in the trainer's
thread). Index tensors are then local ids, plus the ``g.*`` blocks and member edges.

Evaluation (:mod:`distrec.data.heldout`, as the pair models): rank r takes the queries it owns
(users / groups of its row-wise block, #14's ownership) and reads only their rows: train
positives from the graphs' src ranges, held-out pairs from the valid / test splits of
``interactions`` / ``groups/items`` (range-partitioned by user / group: the footers prune the
other ranks' row groups). ``eval.max_users`` samples each task's queries W-independently; eval
steps are the most any rank needs (one small all-gather per split and task).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.bundle import Bundle
from distrec.data.collate import max_over_ranks
from distrec.data.csr import Csr
from distrec.data.heldout import heldout_pairs, own_range, plan_queries, union
from distrec.data.loader import rank_slice, step_rng
from distrec.data.pairs import ALIAS, GraphPairs
from distrec.data.payloads import PayloadTraining
from distrec.data.sampling import uniform_negatives
from distrec.data.schema import GRAPH_GROUP_ITEM, ui_graph
from distrec.data.stream import (
    DEFAULT_BUFFER_ROWS,
    EdgePlan,
    RankStream,
    ShardSlice,
    bundle_partitions,
    check_layout,
)
from distrec.graph.partition import own_rows
from distrec.models.api import Batch, EvalQuery, TaskData
from distrec.models.igrec.model import full_table_kjt
from distrec.models.igrec.sampled import IGRecSampler

SAMPLE_STREAM = 3  # step_rng stream of neighbourhood sampling (0: the noise seed)
NEG_STREAM = 1000  # user shard v's negatives: NEG_STREAM + v
GNEG_STREAM = 5000  # group shard v's negatives: GNEG_STREAM + v
GROUP_SEED = 0x6A0  # the group stream's shuffle seed: run.seed + GROUP_SEED


def lookup_kjt(ids: dict[str, np.ndarray]) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """KJT fetching ``ids[key]`` (one id per bag) for every key, padded to the same stride on
    every rank; returns it and ``lookup_n`` [keys] (real bags per key)."""
    n = [len(v) for v in ids.values()]
    stride = max_over_ranks(max(max(n), 1))
    lengths = np.concatenate([(np.arange(stride) < k).astype(np.int32) for k in n])
    values = np.concatenate(list(ids.values())).astype(np.int64)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        list(ids), torch.from_numpy(values), torch.from_numpy(lengths)
    )
    return kjt, torch.tensor(n, dtype=torch.int64)


def shard_quotas(plan: EdgePlan, steps: int) -> list[int]:
    """Pairs per step of each shard, ``ceil(n_v / steps)``: every shard's stream ends within
    ``steps`` and its wrap-around fill is less than one quota. (Equal quotas, as
    :class:`RankStream` deals them, would repeat a small shard's pairs up to max n / n_v times an
    epoch: 35 % fill on MaFengWo's user shards.)"""
    return [-(-plan.shard_rows(v) // max(steps, 1)) for v in range(plan.partitions)]


def balanced_stream(plan: EdgePlan, rank: int, world: int, steps: int, seed: int) -> RankStream:
    """A :class:`RankStream` of ``plan`` whose shard quotas follow the shard sizes
    (:func:`shard_quotas`). Footer counts only: the same quotas and step count on every rank and
    at every world size. Rank batches may then differ in size, which RankStream's equal quotas
    avoid for row-wise sharded lookups of the batch ids; IGRec's lookup is the full tables (or,
    sampled, padded over the ranks), and its loss divides by the global counts."""
    q = shard_quotas(plan, steps)
    stream = RankStream(plan, rank, world, max(sum(q), plan.partitions), seed)
    stream.quota = q
    stream.steps = max(
        (-(-plan.shard_rows(v) // q[v]) for v in range(plan.partitions) if q[v]), default=0
    )
    return stream


class IGRecData(PayloadTraining, TaskData):
    """Training and evaluation batches of IGRec for one rank of ``world`` (module docstring).

    Example::

        data = IGRecData("data/bundles/mafengwo", target_behavior=0, batch_size=2048,
                         eval_batch_size=1024, num_negatives=1, rank=0, world=2, seed=0)
        for batch in data.train_batches(epoch=0): ...
    """

    def __init__(
        self,
        bundle_dir: str,
        *,
        target_behavior: int,
        batch_size: int,
        eval_batch_size: int,
        num_negatives: int,
        rank: int,
        world: int,
        seed: int,
        with_interest_table: bool = False,
        sampler: IGRecSampler | None = None,
        partitions: int = 0,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        eval_max_users: int = 0,
        epochs: int = 0,
    ) -> None:
        self.bundle_dir, self.bundle = bundle_dir, Bundle(bundle_dir)
        self.eval_max_users = eval_max_users  # per task and split (eval.max_users)
        self.epochs = epochs  # train.epochs (> 0: no next-epoch windows after the last epoch)
        m = self.bundle.manifest
        self.num_users, self.num_items, self.num_groups = m.num_users, m.num_items, m.num_groups
        self.target_behavior = target_behavior
        self.target = m.behaviors[target_behavior]
        self.rank, self.world, self.seed, self.k = rank, world, seed, num_negatives
        for name in (ui_graph(self.target), GRAPH_GROUP_ITEM):
            if not self.bundle.has_table(f"graphs/{name}"):
                raise FileNotFoundError(
                    f"{bundle_dir}: graph table graphs/{name} is missing: IGRec streams its train "
                    "pairs from it (rebuild the bundle with spark_jobs.build_bundle)"
                )
        p = bundle_partitions(self.bundle, partitions, batch_size)
        self.plan = EdgePlan(self.bundle, [self.target], p, buffer_rows=buffer_rows)
        n_ui = self.plan.total_rows()
        if n_ui == 0:
            raise ValueError(f"{bundle_dir}: no train interactions of the target behavior")
        steps = -(-n_ui // max(p, min(batch_size, n_ui)))  # data.batch_size pairs a step
        self.stream = balanced_stream(self.plan, rank, world, steps, seed)
        self.steps = self.stream.steps
        self.global_batch = sum(self.stream.quota)
        gview = GraphPairs(self.bundle, GRAPH_GROUP_ITEM)
        self.gplan = EdgePlan(gview, [ALIAS], p, buffer_rows=buffer_rows)  # type: ignore[arg-type]
        self.gstream: RankStream | None = None
        self.group_batch = 0
        if self.gplan.total_rows():
            self.gstream = balanced_stream(self.gplan, rank, world, self.steps, seed + GROUP_SEED)
            self.group_batch = sum(self.gstream.quota)
            assert self.gstream.steps <= self.steps
        self.eval_batch = max(world, (eval_batch_size // world) * world)
        counts = {"user": m.num_users, "item": m.num_items, "group": m.num_groups}
        if with_interest_table:
            counts["interest"] = m.num_users
        self.kjt = full_table_kjt(counts)
        self.sampler = sampler  # sampled graph mode when set
        self.with_interest_table = with_interest_table
        self._eval: dict[tuple[str, str, int], tuple[np.ndarray, Csr, Csr, int]] = {}
        self._held: dict[tuple[str, str], Csr] = {}  # (task, split) -> own held-out pairs
        self.init_prefetch(0, 0)  # the engine sets data.prefetch / data.num_workers

    # ---- training ------------------------------------------------------------------------
    def num_train_steps(self, epoch: int) -> int:
        if self.gstream is not None and self.gstream.error:
            raise SystemExit(self.gstream.error)
        return self.stream.num_steps()

    def _triples(
        self, parts: list[ShardSlice], key: str, epoch: int, step: int, stream: int, n_dst: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src [q], pos [q], neg [q, K]) of a rank's shard slices, negatives per shard."""
        negs = []
        for part in parts:
            if part.local.shape[0] == 0:
                negs.append(np.zeros((0, self.k), np.int64))
                continue
            rng = step_rng(self.seed, epoch, step, stream + part.shard)
            negs.append(uniform_negatives(part.local, n_dst, self.k, part.window.pos[key], rng))
        empty = np.zeros(0, np.int64)
        src = np.concatenate([p.users for p in parts]) if parts else empty
        dst = np.concatenate([p.items for p in parts]) if parts else empty
        neg = np.concatenate(negs).reshape(-1, self.k) if negs else np.zeros((0, self.k), np.int64)
        return src, dst, neg

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        """This rank's numpy arrays of global step ``step`` (torch-free; every draw is a
        function of (seed, epoch, step, shard), so a resumed epoch skips the done steps exactly)."""
        parts = self.stream.step_slices(epoch, step)
        users, pos, neg = self._triples(parts, self.target, epoch, step, NEG_STREAM, self.num_items)
        if self.gstream is not None:
            gparts = self.gstream.step_slices(epoch, step)
            groups, gpos, gneg = self._triples(
                gparts, ALIAS, epoch, step, GNEG_STREAM, self.num_items
            )
        else:
            groups = gpos = np.zeros(0, np.int64)
            gneg = np.zeros((0, self.k), np.int64)
        noise_seed = int(step_rng(self.seed, epoch, step).integers(0, 2**62))
        # Per-rank loss denominators: global count / world, so that the ranks' losses (averaged
        # by the gradient all-reduce) add up to the global batch mean whatever each rank holds.
        norm = [self.global_batch / self.world, max(self.group_batch, 1) / self.world]
        mine = (users, pos, neg, groups, gpos, gneg)
        out: dict[str, Any] = {"seed": noise_seed, "norm": norm, "size": len(users)}
        if self.sampler is not None:
            rng = step_rng(self.seed, epoch, step, SAMPLE_STREAM)
            out["sampled"] = self.sampler.sample(*mine, rng)
        else:
            out["dense"] = dict(zip(("users", "pos", "neg", "groups", "gpos", "gneg"), mine))
        return out

    def warm(self, epoch: int, step: int) -> None:
        self.stream.step_slices(epoch, step)  # the shards' windows of that step, cached
        if self.gstream is not None:
            self.gstream.step_slices(epoch, step)

    def after_epoch(self, epoch: int) -> None:
        if not 0 < self.epochs <= epoch + 1:  # none after the last epoch
            self.warm(epoch + 1, 0)  # the next epoch's first windows while the trainer validates

    def data_state(self, epoch: int, step: int) -> dict[str, Any]:
        """The data position before global step ``step`` of ``epoch`` (checkpoint meta): the
        layout the streams depend on plus this rank's shard cursors of both streams."""
        shards = {f"user.{v}": c for v, c in self.stream.position(epoch, step).items()}
        if self.gstream is not None:
            shards.update({f"group.{v}": c for v, c in self.gstream.position(epoch, step).items()})
        return {"epoch": epoch, "step": step, **self._layout(), "shards": shards}

    def _layout(self) -> dict[str, int]:
        return {
            "partitions": self.plan.partitions,
            "global_batch": self.global_batch,
            "group_batch": self.group_batch,
            "buffer_rows": self.plan.buffer_rows,
            "seed": self.seed,
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """Refuse to resume from a data position laid out differently (the streams would differ)."""
        check_layout(state, self._layout())

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benches: rows read per table, window loads, built batches."""
        return {
            "rank": self.rank,
            "world_size": self.world,
            "shards": self.stream.shards,
            "steps": self.steps,
            "global_batch": self.global_batch,
            "group_batch": self.group_batch,
            "rows_read": dict(self.bundle.rows_read),
            "window_reads": [list(r) for r in self.stream.reads],
            "group_window_reads": [list(r) for r in self.gstream.reads] if self.gstream else [],
            "built": {str(e): c for e, c in self.built.items()},
        }

    def to_batch(self, payload: dict[str, Any]) -> Batch:
        """Tensors of a payload; sampled mode pads the lookup KJT to the step's largest over the
        ranks here (an all-reduce: in the trainer, never in a worker)."""
        if "sampled" in payload:
            return self._sampled_batch(payload)
        dense = {k: torch.from_numpy(v) for k, v in payload["dense"].items()}
        dense["seed"] = torch.tensor(payload["seed"], dtype=torch.int64)
        dense["norm"] = torch.tensor(payload["norm"])
        return Batch(sparse={"ebc": self.kjt}, dense=dense, size=payload["size"])

    def _sampled_batch(self, payload: dict[str, Any]) -> Batch:
        """This rank's sampled-mode batch from the sample of its own slice (global ids; one rng
        for every rank: a node's draws do not depend on W)."""
        p = payload["sampled"]
        ids = {"user": p["fetch.user"], "item": p["fetch.item"], "group": p["fetch.group"]}
        if self.with_interest_table:
            ids["interest"] = p["fetch.user"]
        kjt, lookup_n = lookup_kjt(ids)
        dense = {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in p.items()
            if not k.startswith("fetch.") or k == "fetch.group"
        }
        dense["seed"] = torch.tensor(payload["seed"], dtype=torch.int64)
        dense["norm"] = torch.tensor(payload["norm"])
        dense["lookup_n"] = lookup_n
        return Batch(sparse={"ebc": kjt}, dense=dense, size=payload["size"])

    # ---- evaluation ----------------------------------------------------------------------
    def _range(self, task: str) -> tuple[int, int]:
        """The query ids ``[lo, hi)`` this rank owns (row-wise blocks, as the tables')."""
        n = self.num_users if task == "user" else self.num_groups
        return own_range(n, self.rank, self.world)

    def _own_split_pairs(self, task: str, split: str) -> Csr:
        """:meth:`_split_pairs` of this rank's own range (cached: test reads valid's too)."""
        if (task, split) not in self._held:
            self._held[(task, split)] = self._split_pairs(task, split, *self._range(task))
        return self._held[(task, split)]

    def _split_pairs(self, task: str, split: str, lo: int, hi: int) -> Csr:
        """Held-out (query, item) pairs of ``split`` with query in ``[lo, hi)``: a Csr over the
        range's local rows (row k = query lo + k), read from the range's row groups only."""
        if task == "user":
            return heldout_pairs(
                self.bundle, "interactions", "user", split, lo, hi, self.num_items, self.target
            )
        return heldout_pairs(self.bundle, "groups/items", "group", split, lo, hi, self.num_items)

    def _train_rows(self, task: str, lo: int, hi: int) -> Csr:
        """Train positives of queries ``[lo, hi)`` from the graph's src range (row k = lo + k)."""
        name = ui_graph(self.target) if task == "user" else GRAPH_GROUP_ITEM
        return own_rows(self.bundle, name, lo, hi)

    def _eval_rows(self, split: str, task: str) -> tuple[np.ndarray, Csr, Csr, int]:
        """(own queries [n] ascending (the ``eval.max_users`` sample), their targets, their
        excluded items (local rows), eval steps); cached. The first call per (split, task) is a
        collective (:func:`distrec.data.heldout.plan_queries`)."""
        per = self.eval_batch // self.world
        key = (task, split, per)  # the step count depends on the step size
        if key not in self._eval:
            lo, hi = self._range(task)
            targets = self._own_split_pairs(task, split)
            exclude = self._train_rows(task, lo, hi)
            if split == "test":
                exclude = union(exclude, self._own_split_pairs(task, "valid"))
            queries = np.flatnonzero(targets.degrees() > 0) + lo
            keep, steps = plan_queries(
                queries, per, self.eval_max_users, self.seed, f"{split}.{task}"
            )
            self._eval[key] = (queries[keep], targets, exclude, steps)
        return self._eval[key]

    def num_eval_steps(self, split: str, task: str = "user") -> int:
        """Eval steps of ``split``: the most any rank needs (collective on first use)."""
        return self._eval_rows(split, task)[3]

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        """This rank's own queries with held-out items in ``split``, eval_batch / W per step;
        exclude = train (+ valid for test) items. Same step count on every rank (an empty
        query batch once a rank has none left)."""
        if task not in ("user", "group"):
            raise ValueError(f"IGRec has tasks user and group, not {task!r}")
        queries, targets, exclude, steps = self._eval_rows(split, task)
        lo = self._range(task)[0]
        per = self.eval_batch // self.world
        for t in range(steps):
            ids = queries[t * per : (t + 1) * per]
            batch = Batch(
                sparse={"ebc": self.kjt}, dense={"ids": torch.from_numpy(ids)}, size=len(ids)
            )
            yield EvalQuery(
                batch=batch,
                ids=torch.from_numpy(ids),
                targets=[targets.row(int(q) - lo)[0].tolist() for q in ids],
                exclude=[exclude.row(int(q) - lo)[0].tolist() for q in ids],
            )

    def item_batch(self, items: torch.Tensor) -> Batch:
        return Batch(
            sparse={"ebc": self.kjt}, dense={"items": items.to(torch.int64)}, size=len(items)
        )

    def queries_for(self, ids: np.ndarray, task: str = "user") -> Iterator[EvalQuery]:
        """Queries of users or groups ``ids`` [n] whatever their split (export, recommend):
        targets empty, exclude = train + valid items, as for test; this rank's slice of each
        step, reading the rows of that slice's id range only."""
        if task not in ("user", "group"):
            raise ValueError(f"IGRec has tasks user and group, not {task!r}")
        ids = np.asarray(ids, dtype=np.int64)
        sl = rank_slice(self.eval_batch, self.rank, self.world)
        for t in range(max(1, -(-len(ids) // self.eval_batch))):
            q = ids[t * self.eval_batch : (t + 1) * self.eval_batch][sl]
            exclude: list[list[int]] = []
            if len(q):
                lo, hi = int(q.min()), int(q.max()) + 1
                ex = union(self._train_rows(task, lo, hi), self._split_pairs(task, "valid", lo, hi))
                exclude = [ex.row(int(x) - lo)[0].tolist() for x in q]
            batch = Batch(sparse={"ebc": self.kjt}, dense={"ids": torch.from_numpy(q)}, size=len(q))
            yield EvalQuery(
                batch=batch, ids=torch.from_numpy(q), targets=[[] for _ in q], exclude=exclude
            )
