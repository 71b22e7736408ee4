"""``InteractionData``: the user-item BPR data adapter shared by MF, LightGCN and friends.

Training rows are the unique (user, item) pairs of the train split (target behavior, or the
union of the behaviors asked for), streamed rank-partitioned from the ``ui.<behavior>`` graphs by
:mod:`distrec.data.stream`: rank r reads only its virtual shards' user ranges, and each step's
global batch (shard v's quota of pairs, its negatives drawn from the (seed, epoch, step, v)
stream against the user's positives in the shard) does not depend on the world size. A 2-rank run
sees the same global batches as a 1-rank run, in another order within the batch.

Batch layout (B = this rank's batch, k = num_negatives)::

    Batch.sparse["ebc"] = KJT keys ["user", "pos", "neg"]
        user: B bags of 1 id, pos: B bags of 1 id, neg: B bags of k ids
    Batch.size = B

Every KJT carries all three keys (empty ones with zero lengths): a sharded EBC expects the same
keys on every call.

Evaluation (:mod:`distrec.data.heldout`): rank r evaluates the users of its row-wise block
``[lo, hi)`` and reads only their rows: held-out target pairs from the valid / test splits (range-
partitioned by user), train exclusions from ``ui.<target>``'s src range, fixed candidates from
``eval/<protocol>`` by user range. ``eval_batch_size // W`` own users a step, the same step count
on every rank; the union over ranks is the same set of queries at any world size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.heldout import heldout_pairs, own_range, plan_queries, union
from distrec.data.loader import rank_slice, step_rng
from distrec.data.payloads import PayloadTraining
from distrec.data.sampling import uniform_negatives
from distrec.data.schema import ui_graph
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

KEYS = ["user", "pos", "neg"]
NEG_STREAM = 1000  # step_rng stream of shard v's negatives: NEG_STREAM + v


def make_kjt(
    user: np.ndarray | None = None,
    pos: np.ndarray | None = None,
    neg: np.ndarray | None = None,
) -> KeyedJaggedTensor:
    """KJT with keys user/pos/neg; ``user`` [B], ``pos`` [B] and ``neg`` [B, k] (None = empty key).

    One id per bag for user and pos, k per bag for neg. A KJT has one stride for all keys, so an
    empty key is B bags of length 0 (B taken from the keys that are given).
    """
    given = [a for a in (user, pos, neg) if a is not None]
    stride = int(np.asarray(given[0]).shape[0]) if given else 0
    parts: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for a, one_per_bag in ((user, True), (pos, True), (neg, False)):
        if a is None:
            lengths.append(np.zeros(stride, dtype=np.int64))
            continue
        a = np.asarray(a, dtype=np.int64)
        if a.shape[0] != stride:
            raise ValueError(f"make_kjt: keys have {a.shape[0]} and {stride} bags; need the same B")
        k = 1 if one_per_bag or a.ndim == 1 else a.shape[1]
        parts.append(a.reshape(-1))
        lengths.append(np.full(stride, k, dtype=np.int64))
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return KeyedJaggedTensor(
        keys=list(KEYS),
        values=torch.from_numpy(values),
        lengths=torch.from_numpy(np.concatenate(lengths)),
        stride=stride,
    )


def query_batch(users: np.ndarray, pad: np.ndarray) -> Batch:
    """Query batch of ``users`` [b]; a rank with no query this step (b = 0: its own queries
    are done, another rank's are not) looks up ``pad`` [1] instead, because a sharded lookup is a
    collective every rank joins and TorchRec rejects a zero-stride KJT. ``Batch.size`` stays b:
    the evaluator keeps the first ``len(targets)`` = b query rows."""
    ids = users if users.shape[0] else pad
    return Batch(sparse={"ebc": make_kjt(user=ids)}, size=int(users.shape[0]))


class InteractionData(PayloadTraining, TaskData):
    """BPR training data and full-ranking (or fixed-candidate) evaluation for one rank.

    Example::

        data = InteractionData("bundle/", rank=0, world_size=2, batch_size=2048, num_negatives=1)
        for batch in data.train_batches(epoch=0): ...
        for q in data.eval_queries("valid"): ...
    """

    def __init__(
        self,
        bundle: Bundle | str,
        rank: int = 0,
        world_size: int = 1,
        *,
        batch_size: int = 2048,
        num_negatives: int = 1,
        eval_batch_size: int = 1024,
        seed: int = 0,
        behaviors: list[str] | None = None,
        prefetch: int = 2,
        workers: int = 0,
        candidates: bool = False,
        partitions: int = 0,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        pos_behaviors: list[str] | None = None,
        eval_max_users: int = 0,
        epochs: int = 0,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        m = self.bundle.manifest
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.num_negatives = batch_size, num_negatives
        self.eval_batch_size, self.seed = eval_batch_size, seed
        self.candidates = candidates
        self.eval_max_users = eval_max_users
        self.epochs = epochs  # train.epochs (> 0: no next-epoch windows after the last epoch)
        self.num_users, self.num_items = m.num_users, m.num_items
        self.target = m.target_behavior
        self.train_behaviors = list(behaviors) if behaviors else [self.target]
        # Train rows: unique (user, item) over the chosen behaviors, this rank's shards only.
        self.plan = EdgePlan(
            self.bundle,
            self.train_behaviors,
            bundle_partitions(self.bundle, partitions, batch_size),
            pos_behaviors=pos_behaviors,
            buffer_rows=buffer_rows,
        )
        self.stream = RankStream(self.plan, rank, world_size, batch_size, seed)
        self._target_train: Csr | None = None
        self._heldout: dict[str, Csr] = {}
        # the users this rank evaluates (row-wise blocks, as the tables' and the graph reads')
        self.eval_lo, self.eval_hi = own_range(self.num_users, rank, world_size)
        # (split, per-rank queries a step) -> the rank's queries and the eval step count
        self._eval: dict[
            tuple[str, int], tuple[np.ndarray, list[list[int]], list[list[int]] | None, int]
        ] = {}
        # train_batches prefetches payloads (distrec.data.payloads); built[epoch] counts them
        self.init_prefetch(prefetch, workers)
        self.fill_rows = 0  # wrap-around fill pairs handed out

    @classmethod
    def from_config(
        cls, cfg: Any, bundle_dir: str, rank: int, world_size: int, **kw: Any
    ) -> InteractionData:
        """Build from a :class:`distrec.config.Config` (data.*, run.seed, eval.protocol);
        ``data.num_workers >= 1`` prefetches in a worker process (recommended, see train_batches)."""
        return cls(
            bundle_dir,
            rank,
            world_size,
            batch_size=cfg.data.batch_size,
            num_negatives=cfg.data.num_negatives,
            eval_batch_size=cfg.data.eval_batch_size,
            seed=cfg.run.seed,
            prefetch=cfg.data.prefetch,
            workers=cfg.data.num_workers,
            candidates=cfg.eval.protocol == "sampled",
            partitions=cfg.data.partitions,
            buffer_rows=cfg.data.shuffle_buffer,
            eval_max_users=cfg.eval.max_users,
            epochs=cfg.train.epochs,
            **kw,
        )

    # ----------------------------------------------------------------- training
    @property
    def num_train_rows(self) -> int:
        """Train pairs over all shards (an upper bound for a union of behaviors)."""
        return self.plan.total_rows()

    def num_train_steps(self, epoch: int) -> int:
        return self.stream.num_steps()

    @property
    def target_train(self) -> Csr:
        """Target-behavior train positives of this rank's users ``[eval_lo, eval_hi)``, local rows
        (row k = user eval_lo + k): the evaluation masks, read on first use from the graph's src
        range."""
        if self._target_train is None:
            name = ui_graph(self.target)
            self._target_train = own_rows(self.bundle, name, self.eval_lo, self.eval_hi)
        return self._target_train

    def shard_negatives(self, part: ShardSlice, epoch: int, step: int, k: int) -> np.ndarray:
        """k uniform negatives per pair of ``part`` [q, k], rejected against the user's positives
        over the training behaviors; drawn from the (seed, epoch, step, shard) stream."""
        win = part.window
        if len(self.train_behaviors) == 1:
            pos = win.pos[self.train_behaviors[0]]
        else:
            pos = win.union(self.train_behaviors, self.num_items)
        rng = step_rng(self.seed, epoch, step, NEG_STREAM + part.shard)
        return uniform_negatives(part.local, self.num_items, k, pos, rng)

    def payload(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """numpy (user [B], pos [B], neg [B, k]) of this rank for global step ``step``: its
        shards' pairs of the step, in shard order, with their negatives."""
        parts = self.stream.step_slices(epoch, step)
        neg = [self.shard_negatives(p, epoch, step, self.num_negatives) for p in parts]
        return (
            np.concatenate([p.users for p in parts]),
            np.concatenate([p.items for p in parts]),
            np.concatenate(neg).reshape(-1, self.num_negatives),
        )

    @staticmethod
    def to_batch(payload: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Batch:
        user, pos, neg = payload
        return Batch(sparse={"ebc": make_kjt(user, pos, neg)}, size=int(user.shape[0]))

    def build_batch(self, epoch: int, step: int) -> Batch:
        """The :class:`Batch` of this rank for global step ``step`` (see :meth:`payload`)."""
        return self.to_batch(self.payload(epoch, step))

    def warm(self, epoch: int, step: int) -> None:
        self.stream.step_slices(epoch, step)  # the shards' windows of that step, cached

    def after_epoch(self, epoch: int) -> None:
        # load the next epoch's first windows while the trainer finishes this one (and validates);
        # none after the last epoch (a shard's worth of reads held through the final test)
        if not 0 < self.epochs <= epoch + 1:
            self.stream.step_slices(epoch + 1, 0)

    def data_state(self, epoch: int, step: int) -> dict[str, Any]:
        """The data position before global step ``step`` of ``epoch`` (checkpoint meta): the
        stream layout it depends on plus this rank's shard cursors."""
        return {
            "epoch": epoch,
            "step": step,
            "partitions": self.plan.partitions,
            "global_batch": self.batch_size,
            "buffer_rows": self.plan.buffer_rows,
            "seed": self.seed,
            "shards": self.stream.position(epoch, step),
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """Refuse to resume from a data position laid out differently (the stream would differ)."""
        layout = {"partitions": self.plan.partitions, "global_batch": self.batch_size,
                  "buffer_rows": self.plan.buffer_rows, "seed": self.seed}  # fmt: skip
        check_layout(state, layout)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benches: rows read per table, window loads, built batches."""
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "shards": self.stream.shards,
            "steps": self.stream.num_steps(),
            "rows_read": dict(self.bundle.rows_read),
            "window_reads": [list(r) for r in self.stream.reads],
            "built": {str(e): c for e, c in self.built.items()},
        }

    # --------------------------------------------------------------- evaluation
    def heldout(self, split: str) -> Csr:
        """Target-behavior positives of ``split`` (valid/test) of this rank's users, local rows
        (row k = user eval_lo + k): only their rows of the split are read."""
        if split not in self._heldout:
            self._heldout[split] = heldout_pairs(
                self.bundle, "interactions", "user", split, self.eval_lo, self.eval_hi,
                self.num_items, self.target,
            )  # fmt: skip
        return self._heldout[split]

    def _eval_table(self, split: str) -> tuple[np.ndarray, list[list[int]], list[list[int]] | None]:
        """(this rank's query users [n] ascending (global ids), their targets, their fixed
        candidates or None for full ranking)."""
        if self.candidates:
            protocol = self.bundle.manifest.split["protocol"]
            t = self.bundle.split_rows(
                f"eval/{protocol}", split, "user", self.eval_lo, self.eval_hi,
                ["user", "targets", "candidates"],
            )  # fmt: skip
            users = t["user"].to_numpy()
            order = np.argsort(users, kind="stable")
            targets, cands = t["targets"].to_pylist(), t["candidates"].to_pylist()
            return users[order], [targets[i] for i in order], [cands[i] for i in order]
        h = self.heldout(split)
        local = np.flatnonzero(h.degrees() > 0)
        return local + self.eval_lo, [r.tolist() for r in h.rows(local)], None

    @property
    def eval_per_rank(self) -> int:
        """Own queries a rank evaluates per step (``eval_batch_size`` over all ranks)."""
        return max(1, self.eval_batch_size // self.world_size)

    def _eval_queries_of(
        self, split: str
    ) -> tuple[np.ndarray, list[list[int]], list[list[int]] | None, int]:
        """``_eval_table`` restricted to the ``eval.max_users`` sample, plus the step count (the
        same on every rank: one all-gather the first time, so every rank asks for the same
        splits in the same order, as the evaluator does); cached per split and step size."""
        key = (split, self.eval_per_rank)
        if key not in self._eval:
            users, targets, cands = self._eval_table(split)
            keep, steps = plan_queries(users, key[1], self.eval_max_users, self.seed, split)
            if keep.shape[0] < users.shape[0]:
                users = users[keep]
                targets = [targets[i] for i in keep]
                cands = None if cands is None else [cands[i] for i in keep]
            self._eval[key] = (users, targets, cands, steps)
        return self._eval[key]

    def num_eval_steps(self, split: str) -> int:
        return self._eval_queries_of(split)[3]

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        """This rank's own users with held-out items in ``split``, ``eval_per_rank`` a step;
        ``exclude``: train target positives (+ valid ones for test). Same step count on every
        rank; a rank with nothing left gets an empty query (ids = [])."""
        if task != "user":
            raise ValueError(f"InteractionData evaluates task 'user' only, not {task!r}")
        users, targets, cands, steps = self._eval_queries_of(split)
        masks = [self.target_train] + ([self.heldout("valid")] if split == "test" else [])
        ex = masks[0] if len(masks) == 1 else union(*masks)
        per, lo = self.eval_per_rank, self.eval_lo
        for t in range(steps):
            idx = np.arange(t * per, min((t + 1) * per, users.shape[0]))
            u = users[idx]
            yield EvalQuery(
                batch=query_batch(u, np.zeros(1, dtype=np.int64)),
                ids=torch.from_numpy(u.astype(np.int64)),
                targets=[targets[i] for i in idx],
                exclude=[ex.row(int(x) - lo)[0].tolist() for x in u],
                candidates=[cands[i] for i in idx] if cands is not None else None,
            )

    def item_batch(self, items: torch.Tensor) -> Batch:
        """Batch whose "pos" key holds ``items`` [N], one per bag (user and neg empty)."""
        ids = items.detach().cpu().numpy().astype(np.int64)
        return Batch(sparse={"ebc": make_kjt(pos=ids)}, size=int(ids.shape[0]))

    def queries_for(self, ids: np.ndarray, task: str = "user") -> Iterator[EvalQuery]:
        """Queries of users ``ids`` [n] (any users, with or without held-out items): this rank's
        slice of each step of ``eval_batch_size``; targets empty, exclude = train + valid target
        positives (what a test query masks). For export and recommend."""
        if task != "user":
            raise ValueError(f"InteractionData has task 'user' only, not {task!r}")
        ids = np.asarray(ids, dtype=np.int64)
        gb = self.eval_batch_size
        for start in range(0, max(ids.shape[0], 1), gb):
            n = min(gb, ids.shape[0] - start)
            u = ids[start : start + n][rank_slice(n, self.rank, self.world_size)]
            exclude: list[list[int]] = []
            if u.shape[0]:  # the rows of this slice's id range only
                lo, hi = int(u.min()), int(u.max()) + 1
                ex = union(
                    own_rows(self.bundle, ui_graph(self.target), lo, hi),
                    heldout_pairs(self.bundle, "interactions", "user", "valid", lo, hi,
                                  self.num_items, self.target),
                )  # fmt: skip
                exclude = [ex.row(int(x) - lo)[0].tolist() for x in u]
            yield EvalQuery(
                batch=query_batch(u, np.zeros(1, dtype=np.int64)),
                ids=torch.from_numpy(u),
                targets=[[] for _ in u],
                exclude=exclude,
            )
