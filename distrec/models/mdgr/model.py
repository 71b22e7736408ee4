"""MDGR: multi-interest embedding with dynamic graph clustering (paper section 3).

Tables: one sequence table ``item`` (TorchRec EmbeddingCollection). Everything after the
lookup is dense and runs data-parallel under DDP.

Batch (from :mod:`distrec.models.common.sequence_data`):
    sparse["ec"]: KJT keys ["hist", "pos", "neg"]: each sample's history (<= L ids, oldest
        first), its target item, and sampled negatives (training); queries carry only ``hist``.
    dense["hist_days"]: [B, L] float, days before the history's last item (0 for the newest);
        absent means no timestamps (all zeros).

Score (eq. 16): y = max_j w_j * Linear(z_j . p) over the non-empty clusters j, trained with
binary cross-entropy (eq. 17) on sigmoid(y). With ``model.item_bias`` (not the paper) the item
table has D + 4 columns whose last 4 sum to a per-item bias b_p added to y (4 because the fused
TBE kernel takes only widths that are multiples of 4); item representations passed between the
methods below are then [..., D + 4].
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection

from distrec.models.api import Batch, RecModel
from distrec.models.common.sequence_data import FEATURES
from distrec.models.mdgr.clustering import DynamicGraphClustering, kmeans, last_in_cluster
from distrec.models.mdgr.config import MDGRConfig
from distrec.models.mdgr.encoding import ItemEncoder


@torch.fx.wrap
def _padded(values: torch.Tensor, offsets: torch.Tensor, length: int) -> torch.Tensor:
    """Jagged rows [sum(len), D] -> [B, length, D], zero padded on the right."""
    return torch.ops.fbgemm.jagged_to_padded_dense(values, [offsets], [length], 0.0)


def item_sequence_table(dim: int, num_items: int, device: torch.device) -> EmbeddingCollection:
    """The sharded ``item`` sequence table read by the hist/pos/neg features."""
    config = EmbeddingConfig(
        name="item", embedding_dim=dim, num_embeddings=num_items, feature_names=list(FEATURES)
    )
    return EmbeddingCollection(tables=[config], device=device)


BIAS_COLS = 4  # width of the item-bias block of model.item_bias (TBE widths are multiples of 4)


class InterestWeights(nn.Module):
    """Eq. 15: w_j = softplus(FFN([z_j ; 1[C_i = j] tau_i for i = 1..L])), sigmoid between layers.

    The first layer is applied blockwise (same parameters as on the concatenation): its
    [L * T] block acts on position i's tau_i through its own [hidden, T] slice, so the
    per-position terms u_i (:meth:`position_terms`, independent of the clustering and of the
    target) are computed once per sequence and cluster j sums the u_i of its members."""

    def __init__(self, dim: int, time_dim: int, max_len: int, hidden: int) -> None:
        super().__init__()
        self.dim, self.time_dim, self.max_len = dim, time_dim, max_len
        self.ffn = nn.Sequential(
            nn.Linear(dim + time_dim * max_len, hidden), nn.Sigmoid(), nn.Linear(hidden, 1)
        )

    def _first(self) -> nn.Linear:
        return cast(nn.Linear, self.ffn[0])

    def position_terms(self, tau: torch.Tensor) -> torch.Tensor:
        """tau [B, L, T] -> u [B, L, hidden]."""
        w = self._first().weight[:, self.dim :].view(-1, self.max_len, self.time_dim)
        return torch.einsum("blt,hlt->blh", tau, w)

    def forward(self, z: torch.Tensor, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z [N, K, D], u [N, L, hidden] (:meth:`position_terms`), labels [N, L] -> weights
        [N, K] (>= 0)."""
        k = z.shape[1]
        member = (labels.unsqueeze(1) == torch.arange(k, device=z.device)[None, :, None]).float()
        first = self._first()
        pre = z @ first.weight[:, : self.dim].T + member @ u + first.bias  # [N, K, hidden]
        return F.softplus(self.ffn[2](torch.sigmoid(pre))).squeeze(-1)


class MDGR(RecModel):
    """Not pipelined (TrainPipelineSparseDist needs an fx-traceable forward): ``pipeline_blocker``.

    Example::

        model = MDGR(MDGRConfig(), num_items=1682, device=torch.device("cpu"))
        loss, parts = model(batch)
    """

    pipeline_blocker = (
        "forward writes into tensors in place (labels[:, 0] = 1) and runs data-dependent "
        "clustering loops, which fx cannot trace"
    )

    target_aware_candidates = True  # eq. 11 clusters per candidate: sampled eval must use it
    pair_chunk = 2048  # (sequence, candidate) pairs clustered at once by score_candidates

    def __init__(self, cfg: MDGRConfig, num_items: int, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.ec = item_sequence_table(cfg.dim + BIAS_COLS * int(cfg.item_bias), num_items, device)
        time_dim = cfg.time_dim if cfg.use_time else 0
        pos_dim = cfg.pos_dim if cfg.use_pos else 0
        self.encoder = ItemEncoder(
            cfg.dim, time_dim, pos_dim, cfg.attn_heads, cfg.dropout, cfg.encoder_residual
        )
        self.target_proj = nn.Linear(cfg.dim, cfg.dim)
        self.dgc = DynamicGraphClustering(
            cfg.dim,
            cfg.interests,
            cfg.iterations if cfg.dgc else 0,
            cfg.sim_heads,
            cfg.gamma,
            cfg.gat_heads,
            cfg.kmeans_steps,
            cfg.aware_cycles,
            cfg.kmeans_warm,
        )
        # The weight FFN reads the time encodings; with MDGR-T it still sees cluster membership
        # through a 1-wide indicator, so MDGR-T keeps a learned weight.
        self.weight_time_dim = time_dim if time_dim else 1
        self.weights = InterestWeights(
            cfg.dim, self.weight_time_dim, cfg.max_len, cfg.weight_hidden
        )
        self.out = nn.Linear(1, 1)  # Linear(z_j . p) of eq. 16
        # sampled evaluation scores candidates the way training does
        self.target_aware_candidates = cfg.target_aware

    # -- encoding -----------------------------------------------------------------------------
    def _lookup(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Returns history [B, L, D], mask [B, L], and the jagged pos/neg embedding values."""
        out = self.ec(batch.sparse["ec"])
        seq = out["hist"]
        # the history is encoded from the D embedding columns; the bias block is only scored
        hist = _padded(seq.values()[:, : self.cfg.dim], seq.offsets(), self.cfg.max_len)
        mask = torch.arange(self.cfg.max_len, device=hist.device).unsqueeze(
            0
        ) < seq.lengths().unsqueeze(1)
        return hist, mask, {"pos": out["pos"].values(), "neg": out["neg"].values()}

    def _days(self, batch: Batch, mask: torch.Tensor) -> torch.Tensor:
        days = batch.dense.get("hist_days")
        return torch.zeros(mask.shape, device=mask.device) if days is None else days

    def _encode(self, hist: torch.Tensor, mask: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        return self.encoder(hist, days, mask)

    def _tau(self, days: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder.time_dim:
            return self.encoder.time_encoding(days) * mask.unsqueeze(-1)
        return mask.float().unsqueeze(-1)

    def _logits(
        self, phi: torch.Tensor, mask: torch.Tensor, days: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DGC for C targets per sequence. phi [B, L, D], target [B, C, D] (query-side vectors for
        the attention) -> (z [B, C, K, D], weights [B, C, K], present [B, C, K]); a target [B, D]
        (one per sequence) gives the same without the C axis."""
        single = target.dim() == 2
        target = target.unsqueeze(1) if single else target
        b, c = target.shape[:2]
        k = self.cfg.interests
        if self.cfg.dgc:
            # model.aware_cycles: the cycles before the last n use the target-free query
            free = None
            if self.cfg.aware_cycles > 0 and not single:
                free = self.target_proj(self._history_mean(phi, mask))
            x, labels, _ = self.dgc(phi, mask, self.target_proj(target), free)  # [B, C, L, D]
        else:  # MDGR-DGC: one static clustering of the encoded items, no graph, no target
            x = phi.unsqueeze(1)
            labels = kmeans(phi, mask, k, self.cfg.kmeans_steps)[0].unsqueeze(1)
        z, present = last_in_cluster(x, labels, k)
        cz = z.shape[1]  # C, or 1 where the interests do not depend on the target
        if self.cfg.weights:
            u = self.weights.position_terms(self._tau(days, mask)).repeat_interleave(cz, dim=0)
            w = self.weights(z.flatten(0, 1), u, labels.flatten(0, 1)).view(b, cz, k)
        else:  # MDGR-W: equal weights
            w = torch.ones(z.shape[:3], device=z.device)
        z, w, present = z.expand(b, c, -1, -1), w.expand(b, c, -1), present.expand(b, c, -1)
        return (z[:, 0], w[:, 0], present[:, 0]) if single else (z, w, present)

    def _score_items(
        self, z: torch.Tensor, w: torch.Tensor, present: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 16 for item representations [B, C, D (+ bias block)] -> [B, C] (interests z
        [B, K, D] shared by the candidates, or z [B, C, K, D] one set per candidate), or for one
        item set [N, D (+ bias)] shared by the batch -> [B, N] (full ranking: a running max over
        the K interests, never a [B, K, N] block)."""
        d = self.cfg.dim
        if items.dim() == 2:
            a, c = self.out.weight.reshape(()), self.out.bias.reshape(())
            y = torch.full((z.shape[0], items.shape[0]), float("-inf"), device=z.device)
            for j in range(z.shape[1]):
                s_j = w[:, j : j + 1] * (a * (z[:, j] @ items[:, :d].T) + c)
                y = torch.maximum(y, s_j.masked_fill(~present[:, j : j + 1], float("-inf")))
            return y + items[:, d:].sum(-1) if self.cfg.item_bias else y
        if z.dim() == 4:  # interests per candidate (target-aware): z [B, C, K, D]
            dots = torch.einsum("bckd,bcd->bck", z, items[..., :d])
            s = w * self.out(dots.unsqueeze(-1)).squeeze(-1)
            y = s.masked_fill(~present, float("-inf")).max(dim=-1).values
        else:
            dots = torch.einsum("bkd,bcd->bkc", z, items[..., :d])
            s = w.unsqueeze(-1) * self.out(dots.unsqueeze(-1)).squeeze(-1)
            s = s.masked_fill(~present.unsqueeze(-1), float("-inf"))
            y = s.max(dim=1).values
        return y + items[..., d:].sum(-1) if self.cfg.item_bias else y

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BCE (eq. 17) over each sample's positive and its sampled negatives, one target-aware
        clustering pass per (sample, candidate) pair."""
        hist, mask, tg = self._lookup(batch)
        days = self._days(batch, mask)
        phi = self._encode(hist, mask, days)
        b = phi.shape[0]
        cands = torch.cat(
            [tg["pos"].view(b, 1, -1), tg["neg"].view(b, -1, tg["pos"].shape[-1])], dim=1
        )
        labels = torch.zeros(cands.shape[:2], device=phi.device)
        labels[:, 0] = 1.0
        packed = torch.cat([phi, days.unsqueeze(-1), mask.float().unsqueeze(-1)], dim=-1)
        if self.cfg.target_aware:
            logits = self.score_candidates(packed, cands)
        else:  # one target-free clustering per sequence, every candidate scored against it
            z, w, present = self._logits(phi, mask, days, self._history_mean(phi, mask))
            logits = self._score_items(z, w, present, cands)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss, {"user": loss.detach()}

    # -- evaluation ---------------------------------------------------------------------------
    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """Packed sequence state [B, L, D + 2]: encoded items, days, mask (the target-aware
        clustering needs the whole sequence at scoring time)."""
        hist, mask, _ = self._lookup(batch)
        days = self._days(batch, mask)
        phi = self._encode(hist, mask, days)
        return torch.cat([phi, days.unsqueeze(-1), mask.float().unsqueeze(-1)], dim=-1)

    def item_reps(self, batch: Batch) -> torch.Tensor:
        return self.ec(batch.sparse["ec"])["pos"].values()

    def _unpack(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return q[..., :-2], q[..., -1] > 0.5, q[..., -2]

    def score_candidates(
        self, query: torch.Tensor, items: torch.Tensor, task: str = "user"
    ) -> torch.Tensor:
        """Target-aware scoring, faithful to eq. 11: one clustering per (sequence, candidate),
        the first cycle's target-free part shared by a sequence's candidates (see
        :mod:`~distrec.models.mdgr.clustering`). query [B, L, D+2], items [B, C, D] -> [B, C];
        sequences are processed in chunks of <= ``pair_chunk`` pairs.

        Used by training (:meth:`forward`) and, since ``target_aware_candidates`` is set, by the
        engine's sampled-candidate evaluation (``distrec.eval.ranking``); full ranking uses
        :meth:`score`."""
        phi, mask, days = self._unpack(query)
        b, c, _ = items.shape
        per = max(1, self.pair_chunk // max(c, 1))  # sequences per chunk
        out = []
        for s in range(0, b, per):
            t = items[s : s + per]
            z, w, present = self._logits(
                phi[s : s + per], mask[s : s + per], days[s : s + per], t[..., : self.cfg.dim]
            )
            out.append(self._score_items(z, w, present, t))
        return torch.cat(out) if out else items.new_zeros(0, c)

    def score(self, query: torch.Tensor, items: torch.Tensor, task: str = "user") -> torch.Tensor:
        """Full ranking [B, N]. Running the target-aware clustering once per item of a large
        catalogue is out of reach, so the query vector of eq. 11 is the mean of the encoded
        history here (target-free). Sampled protocols go through :meth:`score_candidates`."""
        phi, mask, days = self._unpack(query)
        z, w, present = self._logits(phi, mask, days, self._history_mean(phi, mask))
        return self._score_items(z, w, present, items)

    @staticmethod
    def _history_mean(phi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, D]: mean of the encoded valid history items (the target-free query of eq. 11)."""
        return (phi * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
