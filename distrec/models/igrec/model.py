"""IGRec (paper III): interest disentangler -> interest aggregator -> group fusion -> LightGCN
rating predictor, trained on the user and the group BPR tasks.

Full graph mode with ``partition="owned"`` (the default): each rank computes the rows it owns
(:mod:`distrec.models.igrec.owned`: own-rows lookup, halo all-to-alls for the members, the groups
of its users and the LightGCN layers) and gathers the batch's rows from their owners. With
``partition="replicated"`` every step looks up the whole user, item and group tables through
the (possibly sharded) EmbeddingBagCollection, reads out every group from its (capped) members
and propagates over the whole user-item graph on every rank, as the paper does. The group
readout works on an edge list with a member cap, so its memory is O(groups * cap * M * D), not
O(sum of group sizes).

Shapes: U users, I items, G groups, E membership edges, B batch, K negatives, M interests, D dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.graph.halo import Exchange
from distrec.models.api import Batch, RecModel
from distrec.models.igrec.aggregator import attention_readout, cap_members, select_interests
from distrec.models.igrec.config import IGRecConfig
from distrec.models.igrec.disentangler import build_disentangler
from distrec.models.igrec.fusion import (
    fuse_groups,
    fuse_users,
    interest_regularizer,
    user_group_pool,
)
from distrec.models.igrec.graphs import BundleGraphs, IGRecGraphs
from distrec.models.igrec.owned import OwnedGraphs, eval_cache, forward_owned, gather_typed
from distrec.models.igrec.sampled import represent_sampled

EVAL_SALT = 7_919  # offsets the evaluation generator's seed from the model seed


def full_table_kjt(counts: dict[str, int]) -> KeyedJaggedTensor:
    """KJT that looks up every row of every table once: bag b of key k holds id b for
    b < counts[k]. A KJT has one stride for all keys, so shorter keys get empty trailing bags
    (pooled to zero rows that ``IGRec._tables`` drops)."""
    stride = max(counts.values())
    values = torch.cat([torch.arange(n, dtype=torch.int64) for n in counts.values()])
    lengths = torch.cat([(torch.arange(stride) < n).to(torch.int32) for n in counts.values()])
    return KeyedJaggedTensor.from_lengths_sync(list(counts), values, lengths)


class Readout(nn.Module):
    """Holds W_att [D] of the attention readout (Eq. 3)."""

    def __init__(self, dim: int, device: torch.device | None = None, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.w_att = nn.Parameter(torch.empty(dim, device=device))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Own generator: the same W_att at every world size (see SelfGating.reset_parameters).
        gen = torch.Generator().manual_seed(self.seed + 1)
        w = torch.randn(self.w_att.shape, generator=gen) / self.w_att.numel() ** 0.5
        self.w_att.copy_(w)


def lightgcn(
    e_u: torch.Tensor,
    e_i: torch.Tensor,
    a_ui: torch.Tensor,
    a_iu: torch.Tensor,
    layers: int,
    combine: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 10-11: ``e_u^{k+1} = A_ui e_i^k``, ``e_i^{k+1} = A_iu e_u^k``, layers combined by
    ``sum`` or ``mean``. e_u [U, D], e_i [I, D], a_ui sparse [U, I], a_iu sparse [I, U]."""
    us, its = [e_u], [e_i]
    for _ in range(layers):
        u_next = torch.sparse.mm(a_ui, its[-1])
        i_next = torch.sparse.mm(a_iu, us[-1])
        us.append(u_next)
        its.append(i_next)
    u, i = torch.stack(us).sum(0), torch.stack(its).sum(0)
    if combine == "mean":
        u, i = u / (layers + 1), i / (layers + 1)
    return u, i


class IGRec(RecModel):
    """IGRec on one device; sharding is applied from outside (DistributedModelParallel).

    Not pipelined (TrainPipelineSparseDist needs an fx-traceable forward): ``pipeline_blocker``.

    Example::

        model = IGRec(IGRecConfig(dim=8), graphs, layers=2, l2=1e-4, device=torch.device("cpu"))
        loss, parts = model(batch)  # batch from IGRecData.train_batches
    """

    tasks = ("user", "group")
    pipelineable = False
    pipeline_blocker = (
        "forward seeds a torch.Generator from the batch (int(seed.item())) for its Gumbel noise "
        "and member sampling, and branches on batch contents: fx cannot trace either"
    )

    def __init__(
        self,
        cfg: IGRecConfig,
        graphs: IGRecGraphs | BundleGraphs,
        *,
        layers: int,
        l2: float,
        device: torch.device,
        seed: int = 0,
        partition: str = "owned",
    ) -> None:
        super().__init__()
        cfg.check()
        if partition not in ("owned", "replicated"):
            raise ValueError(f"graph.partition: {partition!r} is not one of owned, replicated")
        self.partition = partition
        self.exchange = Exchange()  # rows of other ranks (set_exchange); identity in one process
        self._owned: OwnedGraphs | None = None
        self.cfg, self.layers, self.l2 = cfg, layers, l2
        self.num_users, self.num_items = graphs.num_users, graphs.num_items
        self.num_groups = graphs.num_groups
        self.counts = {"user": self.num_users, "item": self.num_items, "group": self.num_groups}
        if cfg.interest_module == "embedding":
            self.counts["interest"] = self.num_users
        tables = [
            EmbeddingBagConfig(
                name=name,
                embedding_dim=cfg.dim * (cfg.interests if name == "interest" else 1),
                num_embeddings=n,
                feature_names=[name],
                pooling=PoolingType.SUM,
                init_fn=lambda t, s=cfg.init_std: nn.init.normal_(t, std=s),
            )
            for name, n in self.counts.items()
        ]
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)
        gate = build_disentangler(cfg.interest_module, cfg.dim, cfg.interests, seed)
        self.disentangler = gate.to(device) if gate is not None else None
        self.readout = Readout(cfg.dim, device=device, seed=seed)
        self._set_graphs(graphs)
        self._cache: dict[str, torch.Tensor] = {}

    def set_exchange(self, exchange: Exchange) -> None:
        """Use ``exchange`` for the rows of other ranks (the session sets the multi-rank one)."""
        self.exchange, self._owned, self._cache = exchange, None, {}

    def _own(self, device: torch.device) -> OwnedGraphs:
        """Owned mode's rows and halo plans, built once (collective)."""
        if self._owned is None or self._owned.has_group.device != device:
            self._owned = OwnedGraphs(
                self._graphs, self.counts, self.exchange, device, self.cfg.member_cap
            )
        return self._owned

    def _set_graphs(self, g: IGRecGraphs | BundleGraphs) -> None:
        # Plain attributes, not buffers: structure, not state (kept out of checkpoints and DMP).
        self._graphs = g
        if self.partition == "owned":  # whole-graph products are never used: no O(E) copies
            return
        if not isinstance(g, IGRecGraphs):
            raise ValueError("graph.partition=replicated needs the whole graphs (load_graphs)")
        self._member_group = torch.from_numpy(g.member_group)
        self._member_user = torch.from_numpy(g.member_user)
        u = torch.from_numpy(g.ui_user)
        i = torch.from_numpy(g.ui_item)
        w = torch.from_numpy(g.ui_weights())
        shape = (self.num_users, self.num_items)
        self._a_ui = torch.sparse_coo_tensor(
            torch.stack([u, i]), w, shape, check_invariants=True
        ).coalesce()
        self._a_iu = torch.sparse_coo_tensor(
            torch.stack([i, u]), w, shape[::-1], check_invariants=True
        ).coalesce()
        self._pool = user_group_pool(
            self._member_user, self._member_group, self.num_users, self.num_groups
        )

    # ---- representation ------------------------------------------------------------------
    def _tables(
        self, kjt: KeyedJaggedTensor | None, lookup_n: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Pooled rows per table, padding bags dropped: every row, or (sampled mode) the first
        ``lookup_n[j]`` bags of key j (``lookup_n`` [tables], in ``self.counts`` order)."""
        if kjt is None:
            kjt = full_table_kjt(self.counts).to(self.readout.w_att.device)
        pooled = self.ebc(kjt).to_dict()
        counts = (
            self.counts
            if lookup_n is None
            else dict(zip(self.counts, (int(n) for n in lookup_n.tolist()), strict=True))
        )
        return {k: pooled[k][:n] for k, n in counts.items()}

    def _interests(self, t: dict[str, torch.Tensor], users: torch.Tensor) -> torch.Tensor | None:
        """Interests of ``users`` [n] -> [n, M, D]; None when the variant has none."""
        if self.cfg.interest_module == "embedding":
            return t["interest"][users].view(len(users), self.cfg.interests, self.cfg.dim)
        if self.disentangler is None:
            return None
        return self.disentangler(t["user"][users])

    def represent(
        self, t: dict[str, torch.Tensor], *, generator: torch.Generator | None, noise: bool
    ) -> dict[str, torch.Tensor]:
        """Full-graph forward: {"user" [U, D], "item" [I, D] final reps, "group" e*_g [G, D]}."""
        e_u, e_i, e_g = t["user"], t["item"], t["group"]
        dev = e_u.device
        mg, mu = cap_members(
            self._member_group, self._member_user, self.num_groups, self.cfg.member_cap, generator
        )
        mg, mu = mg.to(dev), mu.to(dev)
        interests = self._interests(t, mu)  # per membership edge: [E, M, D]
        if interests is None:  # ablation A: mean of the members' embeddings
            count = torch.bincount(mg, minlength=self.num_groups).clamp(min=1).to(e_u.dtype)
            i_star = torch.zeros_like(e_g).index_add(0, mg, e_u[mu]) / count.unsqueeze(1)
        else:
            readout, _ = attention_readout(interests, mg, self.num_groups, self.readout.w_att)
            if self.cfg.selection == "mean":  # ablation B
                i_star = readout.mean(dim=1)
            else:
                i_star, _ = select_interests(
                    readout, e_g, self.cfg.tau, hard=self.cfg.hard, noise=noise, generator=generator
                )
        e_star = fuse_groups(e_g, i_star)
        e_hat = fuse_users(
            e_u, e_star, self._member_user.to(dev), self._member_group.to(dev), self._pool.to(dev)
        )
        u0 = e_hat if self.cfg.propagate_fused_users else e_u
        users, items = lightgcn(
            u0, e_i, self._a_ui.to(dev), self._a_iu.to(dev), self.layers, self.cfg.layer_combine
        )
        if not self.cfg.propagate_fused_users:
            users = users + (e_hat - e_u) / (
                1 if self.cfg.layer_combine == "sum" else self.layers + 1
            )
        group_items = e_i if self.cfg.group_item_rep == "raw" else items
        return {"user": users, "item": items, "group": e_star, "group_item": group_items}

    # ---- training ------------------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d = batch.dense
        gen = torch.Generator().manual_seed(int(d["seed"].item()))
        if self.partition == "owned" and "g.layers" not in d:
            # r, t: the batch's rows only; the index tensors renumbered to them
            og = self._own(d["users"].device)
            r, t, users, pos, neg, groups, gpos, gneg = forward_owned(self, og, d, gen)
        else:
            t = self._tables(batch.sparse.get("ebc"), d.get("lookup_n"))
            if "g.layers" in d:  # sampled mode: local ids of the batch's neighbourhood
                r = represent_sampled(self, t, d, gen)
            else:
                r = self.represent(t, generator=gen, noise=True)
            users, pos, neg = d["users"], d["pos"], d["neg"]  # [B], [B], [B, K]
            groups, gpos, gneg = d["groups"], d["gpos"], d["gneg"]
        # Sums over this rank's rows divided by (global rows / world): the gradient all-reduce
        # averages ranks, which then gives the global batch mean for any split of the rows.
        norm = d["norm"] if "norm" in d else torch.tensor([max(len(users), 1), max(len(groups), 1)])
        n_user, n_group = float(norm[0]), float(norm[1])
        l_user = _bpr(r["user"][users], r["item"][pos], r["item"][neg]) / n_user
        l_group = _bpr(r["group"][groups], r["group_item"][gpos], r["group_item"][gneg]) / n_group
        loss = self.cfg.eta1 * l_user + (1 - self.cfg.eta1) * l_group
        parts = {"user": l_user.detach(), "group": l_group.detach()}
        if self.cfg.regularizer and self.cfg.eta2 > 0:
            # Over the batch rows, not the unique users: a per-rank mean of unique users would not
            # average to the global batch's value, and 2 ranks would train differently from 1.
            inter = self._interests(t, users)
            if inter is not None:
                reg = interest_regularizer(inter, self.cfg.threshold, absolute=self.cfg.reg_abs)
                reg = reg * len(users) / n_user  # mean over this rank's rows -> global share
                loss = loss + self.cfg.eta2 * reg
                parts["reg"] = reg.detach()
        if self.l2 > 0:
            rows = [t["user"][users], t["item"][pos], t["item"][neg].flatten(0, 1)]
            rows += [t["group"][groups], t["item"][gpos], t["item"][gneg].flatten(0, 1)]
            l2 = torch.stack([x.pow(2).sum() for x in rows]).sum() / (2 * n_user)
            loss = loss + self.l2 * l2
            parts["l2"] = l2.detach()
        return loss, parts

    # ---- evaluation ----------------------------------------------------------------------
    def prepare_eval(self) -> None:
        """One full forward without Gumbel noise; query/item_reps read this cache (owned: this
        rank's rows only, ``{"local": [n_local, 2D]}``, see :func:`owned.eval_cache`)."""
        if self.partition == "owned":
            with torch.no_grad():
                local = eval_cache(self, self._own(self.readout.w_att.device))
            self._cache = {"local": local.detach()}
            return
        with torch.no_grad():
            r = self.represent(self._tables(None), generator=self.eval_generator(), noise=False)
        self._cache = {k: v.detach() for k, v in r.items()}

    def eval_generator(self) -> torch.Generator:
        """Generator of the evaluation forward: with ``member_cap`` > 0 it draws the members
        read per group (no Gumbel noise at evaluation). Seeded, not the global RNG, so an
        evaluation is deterministic and the same at every world size and on every rank."""
        return torch.Generator().manual_seed(self.readout.seed + EVAL_SALT)

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        """Final user reps (task "user") or e*_g (task "group") of batch.dense["ids"]: [B, D]."""
        if not self._cache:
            self.prepare_eval()
        if "local" in self._cache:  # owned: rows from their owners (collective)
            assert self._owned is not None
            t = "user" if task == "user" else "group"
            rows = gather_typed(self._owned, self._cache["local"], {t: [batch.dense["ids"]]})
            return rows[t][0][:, : self.cfg.dim]
        ids = batch.dense["ids"].to(self._cache["user"].device)
        return self._cache["user" if task == "user" else "group"][ids]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        """[N, 2D]: the user-task item reps, then the group-task item reps (see ``score``)."""
        if not self._cache:
            self.prepare_eval()
        if "local" in self._cache:
            assert self._owned is not None
            items = batch.dense["items"]
            return gather_typed(self._owned, self._cache["local"], {"item": [items]})["item"][0]
        items = batch.dense["items"].to(self._cache["item"].device)
        return torch.cat([self._cache["item"][items], self._cache["group_item"][items]], dim=1)

    def score(self, query: torch.Tensor, items: torch.Tensor, task: str = "user") -> torch.Tensor:
        """[B, D] x [N, 2D] -> [B, N], using the half of ``items`` that belongs to ``task``."""
        d = query.shape[-1]
        side = items[:, :d] if task == "user" else items[:, d:]
        return query @ side.T

    def train(self, mode: bool = True) -> IGRec:
        self._cache = {}  # parameters will change: drop the evaluation cache
        return super().train(mode)


def _bpr(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR loss summed over rows, averaged over the K negatives: q [B, D], pos [B, D],
    neg [B, K, D] -> []."""
    s_pos = (q * pos).sum(-1, keepdim=True)  # [B, 1]
    s_neg = torch.einsum("bd,bkd->bk", q, neg)
    return -F.logsigmoid(s_pos - s_neg).mean(dim=1).sum()
