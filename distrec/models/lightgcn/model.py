"""LightGCN (He et al., SIGIR 2020): linear propagation over the normalised user-item graph.

``e^{l+1} = A_hat e^l`` with ``A_hat = D^-1/2 A D^-1/2`` of the bipartite graph, final
representation the mean of layers ``0..L``, score ``<e_u, e_i>``, BPR loss plus L2 on the batch's
ego (layer-0) embeddings. Embedding tables ``user`` and ``item`` live in one TorchRec
EmbeddingBagCollection (sum pooling, one id per bag), so DistributedModelParallel can shard them.

Both graph modes share this code path; the batch decides (see ``distrec.models.lightgcn.data``):

* ``full`` (``partition="owned"``, the default): each rank looks up only the rows it owns (its
  local shard under row-wise sharding), :func:`propagate_partitioned` computes its own rows of
  every layer with the halo fetched from the owners, and the batch's final rows are gathered
  from their owners: per-rank cost O(E/W * D) plus the halo, whatever the batch;
* ``full`` with ``partition="replicated"`` (small graphs): the batch fetches every row and
  :func:`propagate_full` runs over the whole graph on every rank;
* ``sampled``: the batch fetches only the outermost frontier of its blocks and
  :func:`propagate_blocks` applies them.

Evaluation always uses exact full propagation, computed once in ``prepare_eval``; owned, each
rank keeps only its own rows and ``query`` / ``item_reps`` gather the requested rows from their
owners (collectives: the evaluation loop calls them on every rank together).

The cross-rank parts go through an injected :class:`distrec.graph.halo.Exchange`
(:meth:`LightGCN.set_exchange`, done by the engine's session); the default is the one-process
identity, so this stays single-device code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.csr import Csr
from distrec.graph.adjacency import HeteroGraph
from distrec.graph.halo import Exchange, Halo, PartitionedGraph, gather_rows
from distrec.graph.partition import NodePartition
from distrec.graph.propagate import (
    Embeddings,
    combine_layers,
    propagate_blocks,
    propagate_full,
    propagate_partitioned,
    readout_partitioned,
)
from distrec.graph.sampler import Blocks
from distrec.models.api import Batch, RecModel
from distrec.models.lightgcn.data import lookup_kjt
from distrec.models.lightgcn.local_shards import LocalShards, local_shards


@dataclass
class LightGCNConfig:
    dim: int = 64  # embedding dimension D
    init_std: float = 0.1  # normal init of both tables (the reference implementation's)
    behavior: str = ""  # graph and training behavior; "" = the bundle's target behavior
    renormalize: bool = False  # recompute 1/sqrt(deg_u deg_i) instead of trusting the bundle
    # owned full mode: read the own rows straight from the fused shard (local_shards.py) instead
    # of a padded 3-key KJT lookup (false: the KJT lookup; both exact, the KJT one is slower:
    # docs/results/graph_scale.md). A non-fused or non-row-wise table always takes the KJT one.
    local_shards: bool = True
    # with local_shards: the own rows are a view of the fused weights and the backward applies the
    # table optimizer's update itself (EXACT_SGD, EXACT_ROWWISE_ADAGRAD without weight decay;
    # anything else, or false: the shard's VBE TBE call, 6.1 of 8.9 s CPU of a 2^17 step on
    # scale_mb at W = 1, docs/results/graph_scale.md). Off by default until its multi-rank test
    # (test_partitioned_models -k direct_rows) has run; the unit test against FBGEMM passes.
    direct_rows: bool = False


class LightGCN(RecModel):
    """LightGCN over a bipartite ``graph`` (relations ``ui``: user <- item, ``iu``: item <- user).

    ``forward(batch)`` -> (loss, {"bpr", "reg"}); ``query`` -> users [B, D]; ``item_reps`` ->
    items [N, D], both from the full-propagation cache of ``prepare_eval``.

    Not pipelined (TrainPipelineSparseDist needs an fx-traceable forward): ``pipeline_blocker``.

    Example::

        model = LightGCN(LightGCNConfig(dim=8), graph, layers=3, l2=1e-4)
        loss, terms = model(batch)  # batch from LightGCNData
    """

    pipelineable = False
    pipeline_blocker = (
        "forward branches on the batch's keys (owned/replicated, full/sampled blocks) and builds "
        "sparse propagation matrices from batch tensors: python control flow fx cannot trace"
    )

    def __init__(
        self,
        cfg: LightGCNConfig,
        graph: HeteroGraph | dict[str, int],
        *,
        layers: int = 3,
        l2: float = 1e-4,
        device: torch.device | None = None,
        partition: str = "owned",
        rows: Callable[[NodePartition], Csr] | None = None,
    ) -> None:
        """``graph``: the whole graph, or only ``{"user": U, "item": I}`` when ``rows`` reads this
        rank's adjacency rows (its users' ``ui`` rows [hi - lo, I], see
        :func:`distrec.graph.partition.own_rows`; owned mode only: the items' side is the
        transpose of the same rows)."""
        super().__init__()
        self.use_local_shards, self.direct_rows = cfg.local_shards, cfg.direct_rows
        if partition not in ("owned", "replicated"):
            raise ValueError(f"graph.partition: {partition!r} is not one of owned, replicated")
        if not isinstance(graph, HeteroGraph) and (rows is None or partition != "owned"):
            raise ValueError("LightGCN: pass the graph, or node counts with rows in owned mode")
        self._read_rows = rows
        self.layers, self.l2 = layers, l2
        self.partition = partition
        self.exchange = Exchange()
        self._pg: PartitionedGraph | None = None
        self._part: NodePartition | None = None
        self._local: LocalShards | None = None
        counts = graph.num_nodes if isinstance(graph, HeteroGraph) else graph
        self.num_users, self.num_items = counts["user"], counts["item"]
        self.relations = (
            {r.name: (r.src, r.dst) for r in graph.relations}
            if isinstance(graph, HeteroGraph)
            else {"ui": ("user", "item"), "iu": ("item", "user")}
        )
        # Plain attributes, not buffers: DDP must not broadcast them, checkpoints need not hold them.
        self._graph = graph if isinstance(graph, HeteroGraph) else None
        self._adj: dict[str, torch.Tensor] | None = None
        self._cache: Embeddings | None = None
        self._device: torch.device | None = None
        std = cfg.init_std

        def init(w: torch.Tensor) -> None:
            torch.nn.init.normal_(w, std=std)

        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name="user",
                    embedding_dim=cfg.dim,
                    num_embeddings=self.num_users,
                    feature_names=["user"],
                    pooling=PoolingType.SUM,
                    init_fn=init,
                ),
                EmbeddingBagConfig(
                    name="item",
                    embedding_dim=cfg.dim,
                    num_embeddings=self.num_items,
                    feature_names=["pos", "neg"],
                    pooling=PoolingType.SUM,
                    init_fn=init,
                ),
            ],
            device=device,
        )

    # ------------------------------------------------------------------ pieces
    def set_exchange(self, exchange: Exchange) -> None:
        """Use ``exchange`` for the rows of other ranks (the session sets the multi-rank one)."""
        self.exchange, self._pg, self._part, self._cache = exchange, None, None, None

    def _owned(self, device: torch.device) -> tuple[NodePartition, PartitionedGraph]:
        """This rank's adjacency rows and halo plan, built once (collective)."""
        if self._pg is None or self._pg.halo.send_idx.device != device:
            ex = self.exchange
            part = NodePartition(
                {"user": self.num_users, "item": self.num_items}, ex.world, ex.rank
            )
            if self._read_rows is not None:
                ui = self._read_rows(part)
            else:
                assert self._graph is not None
                ui = {r.name: r for r in self._graph.relations}["ui"].adj
            # ui + ui^T from the users' rows: items' sums pushed to their owners (halo.py: the
            # halo then holds items only, not the users of the items' rows)
            pieces: list[tuple[str, str, Csr] | tuple[str, str, Csr, str]] = [
                ("user", "item", ui),
                ("user", "item", ui, "push"),
            ]
            self._part, self._pg = part, PartitionedGraph(part, [pieces], ex, device)
            users, items = part.own("user"), part.own("item")
            local = (
                local_shards(self.ebc, part, self.direct_rows) if self.use_local_shards else None
            )
            # every rank must take the same path: the KJT lookup is a collective
            ok = ex.counts([int(local is not None)] * ex.world)
            self._local = local if all(ok) else None
            if self._local is None:
                stride = max(part.blocks.values())  # the same bag count on every rank
                self._own_kjt = lookup_kjt(users, items, stride).to(device)
            self._own_n = torch.tensor([len(users), len(items)])
        assert self._part is not None
        return self._part, self._pg

    def _layer0(self, device: torch.device) -> torch.Tensor:
        """Layer-0 rows of this rank's nodes [n_local, D]: own users, then own items."""
        self._owned(device)
        if self._local is not None:
            return self._local.rows(device)
        emb0 = self._lookup(self._own_kjt, self._own_n)
        return torch.cat([emb0["user"], emb0["item"]])

    def _own_rows(self, device: torch.device) -> tuple[NodePartition, list[torch.Tensor]]:
        """Owned full propagation: every layer's rows of this rank's nodes, [n_local, D] each."""
        part, pg = self._owned(device)
        return part, propagate_partitioned(pg, self._layer0(device), self.layers)

    def _adjacency(self, device: torch.device) -> dict[str, torch.Tensor]:
        assert self._graph is not None, "replicated mode needs the whole graph"
        if self._adj is None or next(iter(self._adj.values())).device != device:
            self._adj = self._graph.torch_adjacency(device)
        return self._adj

    def _lookup(self, kjt: KeyedJaggedTensor, lookup_n: torch.Tensor) -> Embeddings:
        """Layer-0 rows {user: [n_u, D], item: [n_i, D]} through the (sharded) EBC."""
        kt = self.ebc(kjt).to_dict()
        n_u, n_i = (int(x) for x in lookup_n.tolist())
        return {"user": kt["user"][:n_u], "item": kt["pos"][:n_i]}

    def propagate(self, batch: Batch) -> tuple[list[Embeddings], Embeddings]:
        """Per-layer embeddings (L+1 dicts) and their mean, in the rows the batch's ``*_idx`` use."""
        emb0 = self._lookup(batch.sparse["ebc"], batch.dense["lookup_n"])
        if "g.layers" in batch.dense:
            per_layer = propagate_blocks(Blocks.from_dense(batch.dense, self.relations, "g"), emb0)
        else:
            device = emb0["user"].device
            per_layer = propagate_full(self.relations, emb0, self.layers, self._adjacency(device))
        return per_layer, combine_layers(per_layer)

    # ---------------------------------------------------------------- training
    def _owned_batch_rows(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """Owned full mode: final rows of the batch's users u [B, D], positives p [B, D] and
        negatives n [B, k, D], and ``ego2`` = the sum of |layer-0 row|^2 over the batch's
        B + B + B k ids (the L2 term), fetched from their owners in one exchange: (u, p, n, ego2).

        Each requested row crosses once, whatever its count in the batch: its owner sends the
        layer mean and |layer 0|^2 side by side [S, D + 1] (:func:`readout_partitioned`: the
        layers are never indexed one by one), and the L2 term weights each fetched row by its
        count instead of expanding layer 0 to every occurrence.
        """
        ui, pi, ni = batch.dense["user_idx"], batch.dense["pos_idx"], batch.dense["neg_idx"]
        device = ui.device
        part, pg = self._owned(device)
        h0 = self._layer0(device)
        d = h0.shape[1]
        flat = torch.cat([ui, pi + self.num_users, ni.reshape(-1) + self.num_users])
        uniq, inverse = torch.unique(flat.to(torch.int64).cpu(), return_inverse=True)
        halo = Halo(part, uniq, self.exchange, device)  # its buffer rows: uniq, owner by owner
        mean, ego = readout_partitioned(pg, h0, self.layers, halo.send_idx)  # [S, D] each
        sq = ego.pow(2).sum(1, keepdim=True)  # [S, 1]: |layer 0|^2 computed by the owner
        buf = self.exchange.all_to_all(torch.cat([mean, sq], 1), halo.send, halo.recv)
        # split, not slices: the backward of a split is one cat, a slice's zero-fills its input
        fin_h, sq_h = buf.split([d, 1], 1)  # [H, D], [H, 1]
        at = halo.buffer_index(part, uniq)[inverse]  # [m] buffer row of every id of the batch
        count = torch.bincount(at, minlength=halo.size).to(device=device, dtype=buf.dtype)
        ego2 = (count * sq_h.squeeze(1)).sum()
        b, k = ui.shape[0], ni.shape[1] if ni.dim() == 2 else 1
        u, p, n = fin_h.index_select(0, at.to(device)).split([b, b, b * k])  # [m, D] -> 3 parts
        return u, p, n.reshape(b, k, d), ego2

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR: mean softplus(<u,n> - <u,p>) over B x k pairs + l2 * (|u0|^2+|p0|^2+|n0|^2) / 2B."""
        self._cache = None  # parameters change: the evaluation cache is stale
        self._device = batch.dense["user_idx"].device
        ui, pi, ni = batch.dense["user_idx"], batch.dense["pos_idx"], batch.dense["neg_idx"]
        if self.partition == "owned" and "g.layers" not in batch.dense:
            u, p, n, ego2 = self._owned_batch_rows(batch)
        else:
            per_layer, final = self.propagate(batch)
            u, p, n = final["user"][ui], final["item"][pi], final["item"][ni]  # [B,D] [B,D] [B,k,D]
            ego = per_layer[0]
            u0, p0, n0 = ego["user"][ui], ego["item"][pi], ego["item"][ni]
            ego2 = u0.pow(2).sum() + p0.pow(2).sum() + n0.pow(2).sum()
        pos = (u * p).sum(-1, keepdim=True)  # [B, 1]
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, k]
        bpr = F.softplus(neg - pos).mean()
        b = max(int(ui.shape[0]), 1)
        reg = self.l2 * 0.5 * ego2 / b
        return bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()}

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def prepare_eval(self) -> None:
        """Full propagation of every row, cached for ``query`` / ``item_reps``. Every rank calls it
        (the lookup of all ids is a collective under a sharded EBC)."""
        device = self._device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.partition == "owned":
            # this rank's rows only: [n_local, D], own users then own items
            _, layers = self._own_rows(device)
            self._cache = {"local": torch.stack(layers).mean(0).detach()}
            return
        users = torch.arange(self.num_users, dtype=torch.int64)
        items = torch.arange(self.num_items, dtype=torch.int64)
        emb0 = self._lookup(
            lookup_kjt(users, items).to(device), torch.tensor([len(users), len(items)])
        )
        per_layer = propagate_full(self.relations, emb0, self.layers, self._adjacency(device))
        self._cache = {t: x.detach() for t, x in combine_layers(per_layer).items()}

    def _cached(self) -> Embeddings:
        if self._cache is None:
            self.prepare_eval()
        assert self._cache is not None
        return self._cache

    def _rows(self, t: str, ids: torch.Tensor) -> torch.Tensor:
        cache = self._cached()
        if "local" in cache:  # owned: rows from their owners (collective)
            assert self._part is not None
            flat = self._part.flat(t, ids.cpu())
            return gather_rows(self._part, self.exchange, cache["local"], flat)
        return cache[t][ids.to(cache[t].device)]

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """Final user embeddings [B, D] of the batch's ``user`` ids."""
        return self._rows("user", batch.sparse["ebc"]["user"].values())

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """Final item embeddings [N, D] of the batch's ``pos`` ids."""
        return self._rows("item", batch.sparse["ebc"]["pos"].values())
