"""IGRec's data adapter: BPR triples for the user and the group task, and both tasks' queries.

Every training step carries the full-table KJT (the model reads every row: ``full`` graph mode)
plus index tensors in ``Batch.dense``: ``users, pos`` [b], ``neg`` [b, K], ``groups, gpos`` [bg],
``gneg`` [bg, K] and ``seed`` [] (Gumbel noise and member sampling of this step). A global batch
is the same set of rows whatever the world size and each rank takes its contiguous slice, so the
mean of the per-rank losses equals the 1-rank loss (``dense["norm"]`` holds the denominators).
The group triples ride along: each step takes ceil(group pairs / steps) of them.

``sampled`` graph mode (:mod:`distrec.models.igrec.sampled`): each rank samples the neighbourhood
of its own slice only; the KJT looks up that neighbourhood's rows (``lookup_n`` [tables] real
bags per key), padded to the step's largest lookup over all ranks (one all-reduce here, in the
trainer's thread). Index tensors are then local ids, plus the ``g.*`` blocks and member edges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.collate import max_over_ranks
from distrec.data.csr import Csr
from distrec.data.loader import RankShard, rank_slice, step_rng
from distrec.data.payloads import PayloadTraining
from distrec.data.sampling import uniform_negatives
from distrec.models.api import Batch, EvalQuery, TaskData
from distrec.models.igrec.graphs import IGRecGraphs, read_pairs
from distrec.models.igrec.model import full_table_kjt
from distrec.models.igrec.sampled import IGRecSampler

SAMPLE_STREAM = 3  # step_rng stream of neighbourhood sampling (0: negatives and noise seed)


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


class IGRecData(PayloadTraining, TaskData):
    """Training and evaluation batches of IGRec for one rank of ``world``."""

    def __init__(
        self,
        bundle_dir: str,
        graphs: IGRecGraphs,
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
    ) -> None:
        self.bundle_dir, self.g = bundle_dir, graphs
        self.target_behavior = target_behavior
        self.rank, self.world, self.seed, self.k = rank, world, seed, num_negatives
        n_ui = len(graphs.ui_user)
        if n_ui == 0:
            raise ValueError(f"{bundle_dir}: no train interactions of the target behavior")
        self.global_batch = max(world, min(batch_size, n_ui))
        self.users = RankShard(n_ui, self.global_batch, rank, world, seed, drop_last=True)
        self.steps = self.users.num_steps()
        n_gi = len(graphs.gi_group)
        self.group_batch = max(world, -(-n_gi // self.steps)) if n_gi else 0
        self.eval_batch = max(world, (eval_batch_size // world) * world)
        counts = {"user": graphs.num_users, "item": graphs.num_items, "group": graphs.num_groups}
        if with_interest_table:
            counts["interest"] = graphs.num_users
        self.kjt = full_table_kjt(counts)
        self.sampler = sampler  # sampled graph mode when set
        self.with_interest_table = with_interest_table
        self._epoch_cache: tuple[int, list[np.ndarray]] | None = None
        self.init_prefetch(0, 0)  # the engine sets data.prefetch / data.num_workers
        self.pos_user = Csr.from_pairs(
            graphs.ui_user, graphs.ui_item, graphs.num_users, graphs.num_items
        )
        self.pos_group = Csr.from_pairs(
            graphs.gi_group, graphs.gi_item, graphs.num_groups, graphs.num_items
        )

    # ---- training ------------------------------------------------------------------------
    def num_train_steps(self, epoch: int) -> int:
        return self.steps

    def _group_rows(self, epoch: int, step: int) -> np.ndarray:
        """Global group-pair rows of ``step``: consecutive chunks of an epoch permutation,
        wrapping around, so each epoch sees every group pair at least once."""
        n = len(self.g.gi_group)
        perm = np.random.default_rng([self.seed, epoch, 0x6A0]).permutation(n)
        idx = (np.arange(self.group_batch) + step * self.group_batch) % n
        return perm[idx]

    def _epoch_rows(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches of user-item rows, kept for the running epoch."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self.users.global_batches(epoch))
        return self._epoch_cache[1]

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        """This rank's numpy arrays of global step ``step`` (torch-free; every draw is a
        function of (seed, epoch, step), so a resumed epoch skips the done steps exactly)."""
        sl = rank_slice(self.global_batch, self.rank, self.world)
        g_sl = rank_slice(self.group_batch, self.rank, self.world)
        rows = self._epoch_rows(epoch)[step]
        rng = step_rng(self.seed, epoch, step)
        users, pos = self.g.ui_user[rows], self.g.ui_item[rows]
        neg = uniform_negatives(users, self.g.num_items, self.k, self.pos_user, rng)
        if self.group_batch:
            g_rows = self._group_rows(epoch, step)
            groups, gpos = self.g.gi_group[g_rows], self.g.gi_item[g_rows]
            gneg = uniform_negatives(groups, self.g.num_items, self.k, self.pos_group, rng)
        else:
            groups = gpos = np.zeros(0, np.int64)
            gneg = np.zeros((0, self.k), np.int64)
        noise_seed = int(rng.integers(0, 2**62))
        # Per-rank loss denominators: global count / world, so that the ranks' losses (averaged
        # by the gradient all-reduce) add up to the global batch mean even when the slices are
        # uneven.
        norm = [len(rows) / self.world, max(self.group_batch, 1) / self.world]
        mine = (users[sl], pos[sl], neg[sl], groups[g_sl], gpos[g_sl], gneg[g_sl])
        out: dict[str, Any] = {"seed": noise_seed, "norm": norm, "size": len(mine[0])}
        if self.sampler is not None:
            rng = step_rng(self.seed, epoch, step, SAMPLE_STREAM)
            out["sampled"] = self.sampler.sample(*mine, rng)
        else:
            out["dense"] = dict(zip(("users", "pos", "neg", "groups", "gpos", "gneg"), mine))
        return out

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
    def _positives(self, task: str, splits: tuple[str, ...]) -> Csr:
        n_q = self.g.num_users if task == "user" else self.g.num_groups
        qs, its = [], []
        for s in splits:
            q, i = read_pairs(self.bundle_dir, task, s, self.target_behavior)
            qs.append(q)
            its.append(i)
        return Csr.from_pairs(np.concatenate(qs), np.concatenate(its), n_q, self.g.num_items)

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        """Queries with held-out items in ``split``; exclude = train (+ valid for test) items."""
        if task not in ("user", "group"):
            raise ValueError(f"IGRec has tasks user and group, not {task!r}")
        targets = self._positives(task, (split,))
        exclude = self._positives(task, ("train",) if split != "test" else ("train", "valid"))
        queries = np.flatnonzero(targets.degrees() > 0)
        sl = rank_slice(self.eval_batch, self.rank, self.world)
        steps = -(-len(queries) // self.eval_batch)
        for t in range(steps):
            ids = queries[t * self.eval_batch : (t + 1) * self.eval_batch][sl]
            batch = Batch(
                sparse={"ebc": self.kjt}, dense={"ids": torch.from_numpy(ids)}, size=len(ids)
            )
            yield EvalQuery(
                batch=batch,
                ids=torch.from_numpy(ids),
                targets=[targets.row(int(q))[0].tolist() for q in ids],
                exclude=[exclude.row(int(q))[0].tolist() for q in ids],
            )

    def item_batch(self, items: torch.Tensor) -> Batch:
        return Batch(
            sparse={"ebc": self.kjt}, dense={"items": items.to(torch.int64)}, size=len(items)
        )

    def queries_for(self, ids: np.ndarray, task: str = "user") -> Iterator[EvalQuery]:
        """Queries of users or groups ``ids`` [n] whatever their split (export, recommend):
        targets empty, exclude = train + valid items, as for test."""
        if task not in ("user", "group"):
            raise ValueError(f"IGRec has tasks user and group, not {task!r}")
        exclude = self._positives(task, ("train", "valid"))
        ids = np.asarray(ids, dtype=np.int64)
        sl = rank_slice(self.eval_batch, self.rank, self.world)
        for t in range(max(1, -(-len(ids) // self.eval_batch))):
            q = ids[t * self.eval_batch : (t + 1) * self.eval_batch][sl]
            batch = Batch(sparse={"ebc": self.kjt}, dense={"ids": torch.from_numpy(q)}, size=len(q))
            yield EvalQuery(
                batch=batch,
                ids=torch.from_numpy(q),
                targets=[[] for _ in q],
                exclude=[exclude.row(int(x))[0].tolist() for x in q],
            )
