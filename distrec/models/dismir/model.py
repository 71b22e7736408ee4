"""DisMIR: multi-interest sequential recommendation with item partition (KDD'24).

The item table is one TorchRec table ``item`` [N, D] (D = K: an item's embedding *is* its
vector of partition weights), held as a one-feature SUM-pooled EmbeddingBagCollection that is
read one distinct id per bag (:mod:`distrec.models.common.lookup`: fbgemm's pooled CPU backward
is many times cheaper than the unpooled one; the values and gradients are the same). The batch
features come from
:class:`~distrec.models.common.SequenceData`: ``hist`` (kappa-window), ``pos``, ``neg`` and, with
the partition task, ``cooc`` / ``part_neg``.

``L = L_rec + lambda * L_partition (+ reg_weight * regulariser)`` with
``L_rec`` the pairwise loss against the hardest of ``hard_candidates`` uniform negatives and
``L_partition`` Theorem 4's contrastive loss. Scoring (training and evaluation, one code path):
``readout=attention`` is eq. (5), ``score(u, i) = sum_f a_uf m_uf . e_i`` with
``a_u = softmax_f(m_uf . mean(e))``; ``mean`` is the "w/o DPI" ablation (a_uf = 1/F); ``max`` is
ComiRec's ``max_f m_uf . e_i`` (the plug-in backbone of Table 5).

Shapes: B batch, L = kappa, F interests, D dim, C candidates, N items.
"""

from __future__ import annotations

import math

import torch

from distrec.models.api import Batch, RecModel
from distrec.models.common.lookup import item_bag_table, lookup_ids, unique_lookup
from distrec.models.dismir.config import DisMIRConfig
from distrec.models.dismir.layers import (
    CapsuleRouting,
    SelfAttentiveExtractor,
    hard_negative_bpr,
    interest_weights,
    pad_jagged,
    score_items,
)
from distrec.models.dismir.losses import backward_flow, partition_loss, routing_variance


class DisMIR(RecModel):
    """DisMIR and its ablations (MIR, MIR-RV, MIR-BF, w/o DPI) and the ComiRec-SA backbone.

    Not pipelined (TrainPipelineSparseDist needs an fx-traceable forward): ``pipeline_blocker``.

    Example::

        model = DisMIR(DisMIRConfig(), num_items=1000)
        loss, losses = model(batch)          # batch from SequenceData.train_batches
        q = model.query(eval_batch)          # [B, F, D], a_f * m_f (sum over F scores eq. 5)
        scores = model.score(q, model.item_reps(model_items_batch))   # [B, N]
    """

    tasks = ("user",)
    pipelineable = False
    pipeline_blocker = (
        "forward iterates the KJT's keys to pick its candidate lookups (python control flow on "
        "the batch), which fx cannot trace"
    )

    def __init__(
        self, cfg: DisMIRConfig, num_items: int, device: torch.device | None = None, l2: float = 0.0
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.l2 = l2
        bound = cfg.init_std * math.sqrt(3.0)  # uniform(-a, a) has std a / sqrt(3)
        self.ec = item_bag_table("item", num_items, cfg.dim, bound, device)
        if cfg.backbone == "capsule":
            self.extractor: torch.nn.Module = CapsuleRouting(
                cfg.num_interests, cfg.routing_iters, cfg.routing_noise_std, cfg.routing_grad
            )
        else:
            self.extractor = SelfAttentiveExtractor(cfg.dim, cfg.num_interests, cfg.max_len).to(
                device
            )

    # ------------------------------------------------------------------ parts
    def interests(self, emb: dict, batch: Batch) -> tuple[torch.Tensor, ...]:
        """``emb``: {key: values [nnz, D]} (:func:`unique_lookup`) -> (weighted interests q [B, F, D], raw interests m [B, F, D], routing [B, L, F],
        history h [B, L, D], mask [B, L])."""
        values = emb["hist"]
        lengths = batch.sparse["ec"]["hist"].lengths()
        h, mask = pad_jagged(values, lengths, self.cfg.max_len)
        m, routing = self.extractor(h, mask, batch.dense.get("noise"))
        a = interest_weights(m, h, mask, self.cfg.readout)
        return m * a.unsqueeze(-1), m, routing, h, mask

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        kjt = batch.sparse["ec"]
        bsz = kjt["pos"].values().numel()
        pos_ids = kjt["pos"].values()
        neg_ids = kjt["neg"].values().view(bsz, -1)
        valid = neg_ids != pos_ids.unsqueeze(1)
        # One lookup of every feature's distinct ids, candidates included, and one interest
        # extraction. Only the hardest candidate gets a gradient (the loss is a max), so the
        # others' rows get a zero gradient, which leaves them unchanged under the fused
        # optimisers (Adagrad, row-wise Adagrad, SGD). Issue #16 had a second, no-grad lookup
        # and extraction to pick the hardest first (fewer rows in the backward): with the pooled
        # backward that costs more than it saves (2 ranks, 10^6 items: 13-14k vs 17-18k
        # samples/s, docs/results/dismir.md).
        emb = unique_lookup(self.ec, kjt)
        q, m, routing, h, mask = self.interests(emb, batch)
        e_pos = emb["pos"]  # [B, D]
        e_neg = emb["neg"].view(bsz, -1, cfg.dim)  # [B, C, D]
        s_pos = score_items(q, e_pos.unsqueeze(1), cfg.readout).squeeze(1)
        rec = hard_negative_bpr(s_pos, score_items(q, e_neg, cfg.readout), valid)
        loss = rec
        losses = {"rec": rec.detach()}
        if cfg.partition_weight > 0:
            has = batch.dense["cooc_mask"] > 0
            if bool(has.any()):
                part = partition_loss(e_pos[has], emb["cooc"], emb["part_neg"])
            else:  # no anchor with a co-occurrence neighbour in this batch
                part = e_pos.sum() * 0.0
            loss = loss + cfg.partition_weight * part
            losses["partition"] = part.detach()
        if cfg.regularizer != "none" and cfg.reg_weight > 0:
            if cfg.regularizer == "routing_variance":
                reg = routing_variance(routing, mask)
            else:
                reg = backward_flow(m, h, routing, mask)
            loss = loss + cfg.reg_weight * reg
            losses[cfg.regularizer] = reg.detach()
        if self.l2 > 0:
            l2 = e_pos.pow(2).sum(-1).mean() + emb["neg"].pow(2).sum(-1).mean()
            loss = loss + self.l2 * l2
        return loss, losses

    # ------------------------------------------------------------- evaluation
    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """[B, F, D]: a_uf * m_uf for the attention/mean read-outs (score sums over F, eq. 5),
        m_uf for ``max`` (score takes the max over F, ComiRec)."""
        return self.interests(unique_lookup(self.ec, batch.sparse["ec"]), batch)[0]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """[N, D] embeddings of the ``pos`` ids of an item batch."""
        return lookup_ids(self.ec, batch.sparse["ec"]["pos"].values())

    def item_weight(self) -> torch.Tensor:
        """The unsharded item table [N, D] (single-device analysis: Table 4 statistics)."""
        return self.ec.embedding_bags["item"].weight

    @torch.no_grad()
    def local_item_rows(self, lo: int, hi: int) -> torch.Tensor | None:
        """Item reps [hi - lo, D] of the items [lo, hi) read from the table itself when this
        process holds exactly those rows (unsharded, or the row-wise shard of this rank: TorchRec
        gives rank r the rows from r * ceil(N / W)); a view, no copy. None otherwise (the
        evaluator then looks the items up)."""
        weight = self.ec.state_dict().get("embedding_bags.item.weight")
        if weight is None:
            return None
        if not hasattr(weight, "local_shards"):
            return weight.detach()[lo:hi]
        shards = weight.local_shards()
        if len(shards) != 1:
            return None
        meta = shards[0].metadata
        if list(meta.shard_offsets) != [lo, 0] or list(meta.shard_sizes) != [hi - lo, self.cfg.dim]:
            return None
        return shards[0].tensor.detach()

    def score(self, query: torch.Tensor, items: torch.Tensor, task: str = "user") -> torch.Tensor:
        """[B, N]: sum over interests of the weighted scores (eq. 5), or the max (ComiRec)."""
        return score_items(query, items, self.cfg.readout)
