"""The contract between models, their data adapters and the engine.

A model package provides three things, registered in :mod:`distrec.models.registry`:

* a config dataclass (the ``model:`` section of the YAML);
* ``build_model(cfg, manifest, device) -> RecModel``: embedding tables are TorchRec
  ``EmbeddingBagCollection`` / ``EmbeddingCollection`` modules built on ``device`` (``meta``
  under the trainer, so DistributedModelParallel materialises only the local shards);
* ``build_data(cfg, bundle, rank, world_size) -> TaskData``: turns bundle tables into
  :class:`Batch` objects for training and evaluation.

Shapes: B batch, N candidate items, D embedding dim, F interests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """One step's input.

    ``sparse`` maps a sparse module's attribute name (e.g. ``"ebc"``) to the KeyedJaggedTensor it
    consumes, so each TorchRec module gets its own KJT and TrainPipelineSparseDist can start the
    lookups early. ``dense`` holds everything else (labels, masks, timestamps, per-sample weights
    for graph blocks...). Every rank yields the same number of batches per epoch.
    """

    sparse: dict[str, KeyedJaggedTensor] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    size: int = 0  # number of training samples (for throughput); B

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            sparse={
                k: v.to(device=device, non_blocking=non_blocking) for k, v in self.sparse.items()
            },
            dense={
                k: v.to(device=device, non_blocking=non_blocking) for k, v in self.dense.items()
            },
            size=self.size,
        )

    def record_stream(self, stream: torch.Stream) -> None:
        for v in self.sparse.values():
            v.record_stream(stream)
        for t in self.dense.values():
            t.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            sparse={k: v.pin_memory() for k, v in self.sparse.items()},
            dense={k: v.pin_memory() for k, v in self.dense.items()},
            size=self.size,
        )


@dataclass
class EvalQuery:
    """A batch of evaluation queries (users or groups) and their ground truth.

    ``ids``: [B] entity indices (users, or groups for a group task); ``targets``: held-out
    positive item lists; ``exclude``: items to mask from the ranking (training positives);
    ``candidates``: fixed candidate lists for sampled protocols (None = full ranking).
    """

    batch: Batch
    ids: torch.Tensor
    targets: list[list[int]]
    exclude: list[list[int]]
    candidates: list[list[int]] | None = None


class RecModel(nn.Module):
    """Base class of all models. Subclasses keep single-device semantics.

    ``forward(batch) -> (loss, losses)`` where ``losses`` maps task/term name to a detached
    scalar for logging (``{"user": ..., "group": ..., "reg": ...}``; unweighted per-task values are
    fine: the engine logs the returned loss itself as the total). Returning a tuple whose first
    element is the loss is what TrainPipelineSparseDist expects; a pipelineable model's terms must
    sum to its loss, because the pipeline hands back only the second element.
    """

    #: evaluation tasks; "user" ranks items for users, "group" for groups (IGRec)
    tasks: tuple[str, ...] = ("user",)
    #: whether forward is fx-traceable for TrainPipelineSparseDist
    pipelineable: bool = False
    #: why not, when ``pipelineable`` is False: logged when ``train.pipeline`` asks for the
    #: pipeline and the engine trains with plain steps instead
    pipeline_blocker: str = "forward is not fx-traceable"
    #: whether ``score_candidates`` is not just ``score`` restricted to the candidates (MDGR's
    #: target-aware clustering); sampled-candidate evaluation then calls ``score_candidates``
    target_aware_candidates: bool = False

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """Query-side representation for evaluation: [B, D] or [B, F, D]."""
        raise NotImplementedError

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """Item-side representation of the items in ``batch`` (from ``TaskData.item_batch``): [N, ...]."""
        raise NotImplementedError

    def score(self, query: torch.Tensor, items: torch.Tensor, task: str = "user") -> torch.Tensor:
        """Scores [B, N] of every query against every item rep. Default: dot / max over interests."""
        if query.dim() == 2:
            return query @ items.T
        return torch.einsum("bfd,nd->bfn", query, items).max(dim=1).values

    def score_candidates(
        self, query: torch.Tensor, items: torch.Tensor, task: str = "user"
    ) -> torch.Tensor:
        """Scores [B, C] of each query against its own candidates ``items`` [B, C, ...] (sampled
        protocols: 1 test item + 99 negatives, MDGR's 50 + 50). Default: dot / max over interests."""
        if query.dim() == 2:
            return torch.einsum("bd,bcd->bc", query, items)
        return torch.einsum("bfd,bcd->bfc", query, items).max(dim=1).values

    def prepare_eval(self) -> None:  # noqa: B027 - optional hook
        """Called once (on every rank, model in eval mode) before evaluation, e.g. to run full-graph
        propagation and cache its result. Must issue the same collectives on every rank."""


class TaskData:
    """Data adapter of one model on one bundle, for one rank of ``world_size``."""

    def num_train_steps(self, epoch: int) -> int:
        """Steps this epoch; equal on every rank."""
        raise NotImplementedError

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Training batches of this rank for ``epoch`` (shuffled with seed + epoch) from global
        step ``start_step`` on: a mid-epoch resume seeks there without building earlier batches
        (an adapter without the parameter is skipped through by the engine instead)."""
        raise NotImplementedError

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        """This rank's share of the evaluation queries of ``split``; every rank yields the same count
        (pad with empty queries, ids = [])."""
        raise NotImplementedError

    def item_batch(self, items: torch.Tensor) -> Batch:
        """A batch that makes ``RecModel.item_reps`` return the reps of ``items`` [N]."""
        raise NotImplementedError

    def queries_for(self, ids: np.ndarray, task: str = "user") -> Iterator[EvalQuery]:
        """Queries of the given entities (user, or group for task "group", indices [n]) whatever
        their split, for export and recommend. Every rank passes the same ``ids`` and takes its
        slice of each global step of the evaluation batch size (same step count on every rank);
        ``targets`` are empty, ``exclude`` holds the train (+ valid) target positives, as for test.
        """
        raise NotImplementedError(
            f"{type(self).__name__} builds no queries by id (its queries need a split's rows)"
        )
