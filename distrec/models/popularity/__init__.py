"""Popularity baseline: every user gets the items with the most training interactions.

Nothing to train (``trainable=False``): the engine only evaluates it. The counts are a buffer
built from the bundle's train split (target behavior), so the run's checkpoint holds them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distrec.models.api import Batch, RecModel
from distrec.models.registry import ModelSpec


@dataclass
class PopularityConfig:
    all_behaviors: bool = False  # count every behavior, not only the target one


class Popularity(RecModel):
    """score(u, i) = number of train interactions of item i (the same list for every user).

    Example::

        model = Popularity(torch.tensor([3.0, 1.0, 2.0]))
        model.item_reps(item_batch)  # [N, 1] counts
    """

    counts: torch.Tensor

    def __init__(self, counts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("counts", counts.float())  # [num_items]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        zero = self.counts.sum() * 0.0
        return zero, {"loss": zero}

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """[B, 1] ones: a user does not change the ranking."""
        b = batch.sparse["ebc"]["user"].lengths().shape[0]
        return torch.ones(b, 1, device=self.counts.device)

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """[N, 1] counts of the batch's ``pos`` items."""
        ids = batch.sparse["ebc"]["pos"].values()
        return self.counts[ids].unsqueeze(1)


def build_model(cfg: Any, manifest: Any, device: torch.device) -> Popularity:
    from distrec.data.bundle import Bundle

    n = manifest.num_items
    if device.type == "meta":  # nothing to shard: the engine rebuilds it on the real device
        return Popularity(torch.zeros(n, device=device))
    b = Bundle(cfg.data.bundle)
    behavior = None if cfg.model.all_behaviors else manifest.target_behavior
    items = b.interactions("train", behavior)["item"]
    counts = np.bincount(items, minlength=n).astype(np.float32)
    return Popularity(torch.from_numpy(counts).to(device))


def build_data(cfg: Any, bundle_dir: str, rank: int, world_size: int) -> Any:
    from distrec.data.interactions import InteractionData

    return InteractionData.from_config(cfg, bundle_dir, rank, world_size)


SPEC = ModelSpec(
    name="popularity",
    config_cls=PopularityConfig,
    build_model=build_model,
    build_data=build_data,
    trainable=False,
)
