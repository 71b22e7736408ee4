"""GRU4Rec-style single-interest baseline for the MDGR results table: a GRU over the history's
item embeddings, the last hidden state as the user vector, dot-product scores, and the same
binary cross-entropy over positives and sampled negatives as MDGR (so only the encoder differs).
Batches as in :mod:`distrec.models.mdgr.model`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.models.api import Batch, RecModel
from distrec.models.mdgr.config import MDGRConfig
from distrec.models.mdgr.model import _padded, item_sequence_table


class GRU4Rec(RecModel):
    def __init__(self, cfg: MDGRConfig, num_items: int, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.ec = item_sequence_table(cfg.dim, num_items, device)
        self.gru = nn.GRU(cfg.dim, cfg.dim, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)

    def _user(self, out: dict) -> torch.Tensor:
        seq = out["hist"]
        hist = _padded(seq.values(), seq.offsets(), self.cfg.max_len)
        lengths = seq.lengths().clamp(min=1)
        states, _ = self.gru(self.drop(hist))  # [B, L, D]
        return states[torch.arange(hist.shape[0], device=hist.device), lengths - 1]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.ec(batch.sparse["ec"])
        u = self._user(out)
        b, d = u.shape
        cands = torch.cat(
            [out["pos"].values().view(b, 1, d), out["neg"].values().view(b, -1, d)], dim=1
        )
        logits = torch.einsum("bd,bcd->bc", u, cands)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss, {"user": loss.detach()}

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        return self._user(self.ec(batch.sparse["ec"]))

    def item_reps(self, batch: Batch) -> torch.Tensor:
        return self.ec(batch.sparse["ec"])["pos"].values()
