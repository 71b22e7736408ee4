"""LightGCN (He et al., SIGIR 2020): linear propagation over the normalised user-item graph.

``e^{l+1} = A_hat e^l`` with ``A_hat = D^-1/2 A D^-1/2`` of the bipartite graph, final
representation the mean of layers ``0..L``, score ``<e_u, e_i>``, BPR loss plus L2 on the batch's
ego (layer-0) embeddings. Embedding tables ``user`` and ``item`` live in one TorchRec
EmbeddingBagCollection (sum pooling, one id per bag), so DistributedModelParallel can shard them.

Both graph modes share this code path; the batch decides (see ``distrec.models.lightgcn.data``):

* ``full``: the batch fetches every row (TorchRec brings each from its owner) and
  :func:`propagate_full` runs over the whole graph;
* ``sampled``: the batch fetches only the outermost frontier of its blocks and
  :func:`propagate_blocks` applies them.

Evaluation always uses exact full propagation, computed once in ``prepare_eval``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.graph.adjacency import HeteroGraph
from distrec.graph.propagate import Embeddings, combine_layers, propagate_blocks, propagate_full
from distrec.graph.sampler import Blocks
from distrec.models.api import Batch, RecModel
from distrec.models.lightgcn.data import lookup_kjt


@dataclass
class LightGCNConfig:
    dim: int = 64  # embedding dimension D
    init_std: float = 0.1  # normal init of both tables (the reference implementation's)
    behavior: str = ""  # graph and training behavior; "" = the bundle's target behavior
    renormalize: bool = False  # recompute 1/sqrt(deg_u deg_i) instead of trusting the bundle


class LightGCN(RecModel):
    """LightGCN over a bipartite ``graph`` (relations ``ui``: user <- item, ``iu``: item <- user).

    ``forward(batch)`` -> (loss, {"bpr", "reg"}); ``query`` -> users [B, D]; ``item_reps`` ->
    items [N, D], both from the full-propagation cache of ``prepare_eval``.

    Example::

        model = LightGCN(LightGCNConfig(dim=8), graph, layers=3, l2=1e-4)
        loss, terms = model(batch)  # batch from LightGCNData
    """

    pipelineable = False  # builds sparse tensors from batch data: not fx-traceable

    def __init__(
        self,
        cfg: LightGCNConfig,
        graph: HeteroGraph,
        *,
        layers: int = 3,
        l2: float = 1e-4,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.layers, self.l2 = layers, l2
        self.num_users, self.num_items = graph.num_nodes["user"], graph.num_nodes["item"]
        self.relations = {r.name: (r.src, r.dst) for r in graph.relations}
        # Plain attributes, not buffers: DDP must not broadcast them, checkpoints need not hold them.
        self._graph = graph
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
    def _adjacency(self, device: torch.device) -> dict[str, torch.Tensor]:
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
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR: mean softplus(<u,n> - <u,p>) over B x k pairs + l2 * (|u0|^2+|p0|^2+|n0|^2) / 2B."""
        self._cache = None  # parameters change: the evaluation cache is stale
        self._device = batch.dense["user_idx"].device
        per_layer, final = self.propagate(batch)
        ui, pi, ni = batch.dense["user_idx"], batch.dense["pos_idx"], batch.dense["neg_idx"]
        u, p, n = final["user"][ui], final["item"][pi], final["item"][ni]  # [B,D] [B,D] [B,k,D]
        pos = (u * p).sum(-1, keepdim=True)  # [B, 1]
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, k]
        bpr = F.softplus(neg - pos).mean()
        ego = per_layer[0]
        u0, p0, n0 = ego["user"][ui], ego["item"][pi], ego["item"][ni]
        b = max(int(ui.shape[0]), 1)
        reg = self.l2 * 0.5 * (u0.pow(2).sum() + p0.pow(2).sum() + n0.pow(2).sum()) / b
        return bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()}

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def prepare_eval(self) -> None:
        """Full propagation of every row, cached for ``query`` / ``item_reps``. Every rank calls it
        (the lookup of all ids is a collective under a sharded EBC)."""
        device = self._device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
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

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """Final user embeddings [B, D] of the batch's ``user`` ids."""
        ids = batch.sparse["ebc"]["user"].values()
        cache = self._cached()["user"]
        return cache[ids.to(cache.device)]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """Final item embeddings [N, D] of the batch's ``pos`` ids."""
        ids = batch.sparse["ebc"]["pos"].values()
        cache = self._cached()["item"]
        return cache[ids.to(cache.device)]
