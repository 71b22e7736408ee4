"""CIGF = embedding tables + CIGCN (compressed interaction graph convolution) + a multi-task head.

Tables: one TorchRec ``EmbeddingBagCollection`` with ``user`` (feature ``user``) and ``item``
(features ``pos``, ``neg``), sized from the manifest, one id per bag, so the KJTs of
:func:`distrec.data.interactions.make_kjt` drive it. A step looks up the *nodes it propagates
over*: every user and item in ``full`` mode, the sampled neighbourhood in ``sampled`` mode; with
row-wise sharding TorchRec fetches each row from the rank that owns it and sends gradients back.

Training batch (``Batch.dense``; node ids in the lookup's node space, users first then items):
``user`` [B], ``pos`` / ``neg`` [K, B] (one positive and one negative per behavior), ``mask``
[K, B] (0 where the user has no interaction of that behavior), and in sampled mode the edges
``adj_rows/adj_cols/adj_w/adj_beh`` [E]. Loss: sum over behaviors of BPR (eq. 17), each term a
sum over the batch divided by B so rank-local losses average to the global one, plus L2 on the
batch's initial embeddings.

Full mode with ``partition="owned"`` (the default): each rank looks up only the users and items it
owns, runs CIGCN on its own rows (every sparse product through
:class:`distrec.graph.halo.PartitionedGraph`, the halo fetched from the owners, K products per
fetch) and gathers the batch's rows from their owners; evaluation keeps the propagated rows
partitioned. ``partition="replicated"``: every rank looks up and propagates the whole graph.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from distrec.data.csr import Csr
from distrec.graph.halo import Exchange, PartitionedGraph, gather_rows
from distrec.graph.partition import NodePartition
from distrec.models.api import Batch, RecModel
from distrec.models.cigf.attention import BehaviorAttention
from distrec.models.cigf.config import CigfConfig
from distrec.models.cigf.graph import adjacency_from_dense, node_kjt, to_sparse
from distrec.models.cigf.heads import Mesi, build_head
from distrec.models.cigf.propagation import cigcn


class Cigf(RecModel):
    """CIGF over K behaviors (target last).

    ``adjs``: the K full-graph adjacencies (node space, :mod:`distrec.models.cigf.graph`) for
    ``full`` mode; None in ``sampled`` mode, where every batch brings its own subgraph.

    Not pipelined (TrainPipelineSparseDist needs an fx-traceable forward): ``pipeline_blocker``.

    Example::

        model = Cigf(CigfConfig(), num_users=M, num_items=N, behaviors=["pv", "fav", "buy"],
                     layers=2, adjs=adjs)
        loss, terms = model(batch)
    """

    pipeline_blocker = (
        "forward branches on the batch's keys (owned/replicated, full/sampled subgraph) and "
        "builds sparse adjacencies from batch tensors: python control flow fx cannot trace"
    )

    def __init__(
        self,
        cfg: CigfConfig,
        num_users: int,
        num_items: int,
        behaviors: list[str],
        layers: int,
        adjs: list[Csr] | None,
        l2: float = 1e-4,
        device: torch.device | None = None,
        partition: str = "owned",
        adj_rows: Callable[[NodePartition], list[list[tuple[str, str, Csr]]]] | None = None,
    ) -> None:
        """``adj_rows`` (owned full mode, instead of ``adjs``): reads this rank's rows of the K
        graphs, ``[[("user", "item", ui rows), ("item", "user", iu rows)] per behavior]``."""
        super().__init__()
        cfg.validate()
        self._adj_rows = adj_rows
        if partition not in ("owned", "replicated"):
            raise ValueError(f"graph.partition: {partition!r} is not one of owned, replicated")
        self.partition = partition
        self.exchange = Exchange()
        self._pg: PartitionedGraph | None = None
        self._part: NodePartition | None = None
        self.cfg = cfg
        self.num_users, self.num_items = num_users, num_items
        self.behaviors = list(behaviors)
        self.k = len(behaviors)
        self.layers = layers
        self.l2 = l2
        d = cfg.embedding_dim
        weights = cfg.loss_weights or [1.0] * self.k
        if len(weights) != self.k:
            raise ValueError(f"model.loss_weights: {len(weights)} values for {self.k} behaviors")
        self.loss_weights = [float(w) for w in weights]

        def init_for(rows: int):  # Xavier-uniform (paper A.1) for a [rows, D] table
            bound = cfg.init_scale * (6.0 / (rows + d)) ** 0.5
            return lambda w: torch.nn.init.uniform_(w, -bound, bound)

        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name="user",
                    embedding_dim=d,
                    num_embeddings=num_users,
                    feature_names=["user"],
                    pooling=PoolingType.SUM,
                    init_fn=init_for(num_users),
                ),
                EmbeddingBagConfig(
                    name="item",
                    embedding_dim=d,
                    num_embeddings=num_items,
                    feature_names=["pos", "neg"],
                    pooling=PoolingType.SUM,
                    init_fn=init_for(num_items),
                ),
            ],
            device=device,
        )
        dense_dev = None if device is None or device.type == "meta" else device
        self.attention = (
            BehaviorAttention(
                d, self.k, layers, cfg.heads, cfg.attention, cfg.leaky_slope, cfg.attention_bias
            )
            if cfg.cigcn
            else None
        )
        self.head = build_head(cfg.head, d, self.k, cfg.gate_per_task, cfg.tower, cfg.gate_input)
        if dense_dev is not None:
            self.attention = self.attention.to(dense_dev) if self.attention else None
            self.head = self.head.to(dense_dev)
        # plain attributes, not buffers: graphs are data (rebuilt from the bundle), not state
        self._adjs_cpu = adjs
        self._adjs_dev: dict[str, list[torch.Tensor]] = {}
        self._cache: torch.Tensor | None = None  # [K, n, D] full-graph reps for evaluation

    # ----------------------------------------------------------------- pieces
    def set_exchange(self, exchange: Exchange) -> None:
        """Use ``exchange`` for the rows of other ranks (the session sets the multi-rank one)."""
        self.exchange, self._pg, self._part, self._cache = exchange, None, None, None

    def _owned(self, device: torch.device) -> tuple[NodePartition, PartitionedGraph]:
        """This rank's rows of the K graphs and their halo plan, built once (collective)."""
        if self._pg is None or self._pg.halo.send_idx.device != device:
            ex = self.exchange
            part = NodePartition(
                {"user": self.num_users, "item": self.num_items}, ex.world, ex.rank
            )
            if self._adj_rows is not None:
                pieces = self._adj_rows(part)
            elif self._adjs_cpu is not None:
                pieces = [[("*", "*", a)] for a in self._adjs_cpu]
            else:
                raise RuntimeError("CIGF owned full mode needs the full-mode adjacencies")
            self._part, self._pg = part, PartitionedGraph(part, pieces, ex, device)
            kjt, n_nodes = node_kjt(
                part.own("user").numpy(), part.own("item").numpy(), max(part.blocks.values())
            )
            self._own_batch = Batch(sparse={"ebc": kjt}, dense={"n_nodes": n_nodes}).to(device)
        assert self._part is not None
        return self._part, self._pg

    def _own_reps(self, device: torch.device) -> tuple[NodePartition, torch.Tensor, torch.Tensor]:
        """Owned full mode: (partition, ego [n_local, D], reps [K, n_local, D]) of own nodes."""
        part, pg = self._owned(device)
        ego = self._ego(self._own_batch)  # own users, then own items: the local order
        alpha = self.attention(ego) if self.attention is not None else None
        return part, ego, cigcn(ego, pg.matmul, self.layers, alpha, self.k)

    def _owned_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's rows gathered from their owners, in the order ``user`` [B], ``pos`` [K, B]
        (k-major), ``neg`` [K, B]: (ego [m, D], reps [m, K, D]), m = B + 2 K B."""
        u, pos, neg = batch.dense["user"], batch.dense["pos"], batch.dense["neg"]
        part, ego, reps = self._own_reps(u.device)
        kb, n_local, d = reps.shape
        local = torch.cat([reps.permute(1, 0, 2).reshape(n_local, kb * d), ego], 1)
        flat = torch.cat([u, pos.reshape(-1), neg.reshape(-1)])
        rows = gather_rows(part, self.exchange, local, flat)  # [m, K*D + D]
        return rows[:, kb * d :], rows[:, : kb * d].unflatten(1, (kb, d))

    def _batch_rows(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Reps ``[K, B, D]`` and initial embeddings ``[B, D]`` of the batch's 1 + 2K roles, in
        the order user, pos of behavior 0..K-1, neg of behavior 0..K-1.

        Owned full mode slices them out of the gathered rows (why: indexing a [K, m, D] tensor
        once per role made autograd zero-fill and scatter a full-size gradient 2(1 + 2K) times,
        IndexBackward0 alone 8.6 % of a 10^6-user step's CPU, plus its fills); otherwise they are
        indexed by node id."""
        u, pos, neg = batch.dense["user"], batch.dense["pos"], batch.dense["neg"]
        if self.partition == "owned" and "adj_rows" not in batch.dense:
            ego, reps = self._owned_batch(batch)
            b, roles = u.shape[0], 1 + pos.shape[0] + neg.shape[0]  # pos, neg: [K, B]
            assert reps.shape[0] == roles * b, "pos / neg must be [K, B]"
            cuts = [(r * b, (r + 1) * b) for r in range(roles)]
            return [reps[lo:hi].transpose(0, 1) for lo, hi in cuts], [ego[lo:hi] for lo, hi in cuts]
        ego, reps = self._reps(batch)
        ids = [u, *pos, *neg]
        return [reps[:, i] for i in ids], [ego[i] for i in ids]

    def _device(self) -> torch.device:
        return next(self.head.parameters()).device

    def _full_adjs(self, device: torch.device) -> list[torch.Tensor]:
        if self._adjs_cpu is None:
            raise RuntimeError("CIGF in sampled mode: the batch must carry its subgraph (adj_*)")
        key = str(device)
        if key not in self._adjs_dev:
            self._adjs_dev[key] = [to_sparse(a, device) for a in self._adjs_cpu]
        return self._adjs_dev[key]

    def _ego(self, batch: Batch) -> torch.Tensor:
        """Initial embeddings of the step's nodes [n, D]: looked-up users, then items."""
        kt = self.ebc(batch.sparse["ebc"]).to_dict()
        nu, ni = (int(v) for v in batch.dense["n_nodes"].tolist())
        return torch.cat([kt["user"][:nu], kt["pos"][:ni]])  # drop the padding bags

    def propagate(self, ego: torch.Tensor, adjs: list[torch.Tensor]) -> torch.Tensor:
        """CIGCN: K representations of every node ``[K, n, D]``."""
        alpha = self.attention(ego) if self.attention is not None else None
        return cigcn(ego, adjs, self.layers, alpha)

    def _reps(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        ego = self._ego(batch)
        if "adj_rows" in batch.dense:
            adjs = adjacency_from_dense(batch.dense, ego.shape[0], self.k)
        else:
            adjs = self._full_adjs(ego.device)
        return ego, self.propagate(ego, adjs)

    # --------------------------------------------------------------- training
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._cache = None  # parameters are about to change
        reps, egos = self._batch_rows(batch)
        k_beh = self.k
        mask = batch.dense["mask"].to(egos[0].dtype)
        b = max(int(batch.dense["user"].shape[0]), 1)
        x = reps[0]  # [K, B, D]
        total = egos[0].new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        reg = egos[0].pow(2).sum()
        for k, name in enumerate(self.behaviors):
            y_pos, y_neg = reps[1 + k], reps[1 + k_beh + k]
            s_pos = self.head(x, y_pos, k)
            s_neg = self.head(x, y_neg, k)
            diff = (s_pos - s_neg) * self.cfg.score_scale  # the authors' ``mult``
            bpr = -(F.logsigmoid(diff) * mask[k]).sum() / b
            total = total + self.loss_weights[k] * bpr
            terms[f"bpr.{name}"] = bpr.detach()
            e_pos, e_neg = egos[1 + k], egos[1 + k_beh + k]
            reg = reg + ((e_pos.pow(2) + e_neg.pow(2)).sum(-1) * mask[k]).sum()
        reg = self.l2 * 0.5 * reg / b
        if self.cfg.gate_l2 and isinstance(self.head, Mesi):
            # the gate weights only (not the bias): keeps W_g [x || y] from saturating the softmax
            reg = reg + self.cfg.gate_l2 * (
                self.head.w_user.pow(2).sum() + self.head.w_item.pow(2).sum()
            )
        terms["reg"] = reg.detach()
        return total + reg, terms

    # ------------------------------------------------------------- evaluation
    def prepare_eval(self) -> None:
        """Full mode: one full-graph propagation (all rows looked up on every rank), cached."""
        self._cache = None
        if self._adjs_cpu is None and self._adj_rows is None:  # sampled mode
            return
        dev = self._device()
        if self.partition == "owned":
            with torch.no_grad():
                _, _, reps = self._own_reps(dev)
            # [n_local, K*D]: this rank's rows only, already in the query / item_reps layout
            self._cache = reps.permute(1, 0, 2).reshape(
                reps.shape[1], reps.shape[0] * reps.shape[2]
            )
            return
        kjt, n_nodes = node_kjt(np.arange(self.num_users), np.arange(self.num_items))
        batch = Batch(sparse={"ebc": kjt}, dense={"n_nodes": n_nodes}).to(dev)
        with torch.no_grad():
            _, self._cache = self._reps(batch)

    def _node_reps(self, batch: Batch, key: str, offset: int) -> torch.Tensor:
        if "adj_rows" in batch.dense:  # sampled: propagate over the batch's own subgraph
            _, reps = self._reps(batch)
            sel = reps[:, batch.dense["nodes"]]
        else:
            if self._cache is None:
                self.prepare_eval()
            assert self._cache is not None
            ids = batch.sparse["ebc"][key].values()
            if self.partition == "owned":
                assert self._part is not None
                flat = ids.cpu() + offset
                return gather_rows(self._part, self.exchange, self._cache, flat)
            sel = self._cache[:, ids.to(self._cache.device) + offset]
        return sel.permute(1, 0, 2).reshape(sel.shape[1], -1)  # [B, K*D]

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """User reps ``[B, K*D]`` (the K CIGCN representations, flattened)."""
        return self._node_reps(batch, "user", 0)

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """Item reps ``[N, K*D]`` of the batch's ``pos`` feature."""
        return self._node_reps(batch, "pos", self.num_users)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """[..., K*D] -> [K, ..., D]."""
        v = t.reshape(*t.shape[:-1], self.k, -1)
        return v.movedim(-2, 0)

    def score(self, query: torch.Tensor, items: torch.Tensor, task: str = "user") -> torch.Tensor:
        """Target-behavior scores [B, N] of queries [B, K*D] against items [N, K*D]."""
        return self.head.matrix(self._split(query), self._split(items), self.k - 1)

    def score_candidates(
        self, query: torch.Tensor, items: torch.Tensor, task: str = "user"
    ) -> torch.Tensor:
        """Target-behavior scores [B, C] against per-query candidates ``items`` [B, C, K*D]."""
        x = self._split(query).unsqueeze(2)  # [K, B, 1, D]
        return self.head(x, self._split(items), self.k - 1)
