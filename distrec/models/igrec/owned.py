"""IGRec's full-graph forward on the rows one rank owns (``graph.partition=owned``).

Users, items and groups are split as the row-wise shards of their tables
(:class:`distrec.graph.partition.NodePartition`); the local layout is own users, own items, own
groups. Per step a rank:

1. looks up only its own rows of every table (its local shard);
2. reads out its own groups from their members' interests, the member rows fetched from their
   owners (one halo all-to-all, planned once over all members of its groups);
3. fuses its own users with the mean of their groups' ``e*_g`` (a partitioned product with the
   user-group pooling matrix: the groups' rows are the halo);
4. runs the LightGCN layers over its own user and item rows (:func:`propagate_partitioned`).

The member cap and the Gumbel noise are drawn for every group from the step's generator, as in
one process, and each rank keeps its groups' rows, so any world size computes the same step.
Only with a member cap is the whole membership edge list held by every rank (for that draw);
otherwise a rank holds its own groups' member rows (:mod:`distrec.models.igrec.graphs`).

Shapes: n local rows (own users + items + groups), E_r member edges of own groups, M interests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from distrec.data.csr import Csr
from distrec.graph.halo import Exchange, Halo, PartitionedGraph, gather_rows
from distrec.graph.partition import NodePartition
from distrec.graph.propagate import propagate_partitioned
from distrec.models.igrec.aggregator import attention_readout, cap_members, gumbel_softmax
from distrec.models.igrec.fusion import fuse_groups

if TYPE_CHECKING:
    from distrec.models.igrec.graphs import BundleGraphs, IGRecGraphs
    from distrec.models.igrec.model import IGRec

TYPES = ("user", "item", "group")


class OwnedGraphs:
    """This rank's adjacency rows, halo plans and own-ids lookup (collective to build, once).

    ``g``: :class:`~distrec.models.igrec.graphs.BundleGraphs` (reads only this rank's rows from
    the bundle) or :class:`~distrec.models.igrec.graphs.IGRecGraphs` (cuts them out of the
    whole graphs); either gives :class:`~distrec.models.igrec.graphs.OwnedRows`.
    """

    def __init__(
        self,
        g: IGRecGraphs | BundleGraphs,
        counts: dict[str, int],
        ex: Exchange,
        device: torch.device,
        member_cap: int = 0,
    ):
        self.exchange = ex
        self.part = part = NodePartition(
            {"user": g.num_users, "item": g.num_items, "group": g.num_groups}, ex.world, ex.rank
        )
        rows = g.owned({t: part.range(t) for t in TYPES}, member_cap)
        self.graph_bytes = rows.nbytes()
        self.lightgcn = PartitionedGraph(
            part, [[("user", "item", rows.ui), ("item", "user", rows.iu)]], ex, device
        )
        # mean over a user's groups: P_ug = 1 / |G(u)|
        ug = rows.user_groups
        cnt = ug.degrees()
        w = (1.0 / np.maximum(cnt, 1)[ug.sources()]).astype(np.float32)
        pool = Csr(ug.indptr, ug.indices, w, ug.num_src, ug.num_dst)
        self.pool = PartitionedGraph(part, [[("user", "group", pool)]], ex, device)
        self.has_group = torch.from_numpy(cnt > 0).unsqueeze(1).to(device)
        # members of own groups: their user rows are the readout's halo
        glo, ghi = part.range("group")
        mem = rows.members
        own_g, own_u = mem.sources() + glo, mem.indices.astype(np.int64)
        members = np.unique(own_u)
        self.members = Halo(part, part.flat("user", torch.from_numpy(members)), ex, device)
        # the member cap draws over every membership (as one process does), then keeps its own
        # groups'; without a cap the own groups' edges are all that is needed
        mg, mu = rows.every_member if rows.every_member is not None else (own_g, own_u)
        self.member_group = torch.from_numpy(np.ascontiguousarray(mg))
        self.member_user = torch.from_numpy(np.ascontiguousarray(mu))
        self.group_range = (glo, ghi)
        # lookup of own rows only: the same bag count on every rank (row-wise sharded pooling)
        keys = list(counts)
        stride = max(part.blocks[k if k != "interest" else "user"] for k in keys)
        values, lengths = [], []
        self.own_n: dict[str, int] = {}
        for k in keys:
            ids = part.own(k if k != "interest" else "user")
            self.own_n[k] = len(ids)
            values.append(ids)
            lengths.append((torch.arange(stride) < len(ids)).to(torch.int32))
        self.kjt = KeyedJaggedTensor.from_lengths_sync(
            keys, torch.cat(values), torch.cat(lengths)
        ).to(device)

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{type: own rows}`` of a local-layout tensor [n, F]."""
        out, at = {}, 0
        for t in TYPES:
            lo, hi = self.part.range(t)
            out[t] = x[at : at + hi - lo]
            at += hi - lo
        return out


def represent_owned(
    model: IGRec,
    og: OwnedGraphs,
    t: dict[str, torch.Tensor],
    *,
    generator: torch.Generator | None,
    noise: bool,
) -> dict[str, torch.Tensor]:
    """:meth:`IGRec.represent` on own rows: ``{user, item, group, group_item}`` [n_own_t, D]."""
    cfg, part = model.cfg, og.part
    e_u, e_i, e_g = t["user"], t["item"], t["group"]
    dev = e_u.device
    mg, mu = cap_members(
        og.member_group, og.member_user, model.num_groups, cfg.member_cap, generator
    )
    glo, ghi = og.group_range
    keep = (mg >= glo) & (mg < ghi)
    mg, mu = (mg[keep] - glo).to(dev), mu[keep]
    n_g = ghi - glo
    # member rows (users, and their interest rows) fetched from their owners
    width = [e_u]
    if cfg.interest_module == "embedding":
        width.append(t["interest"])
    own_user = torch.cat(width, 1)
    halo = og.members.fetch(_user_local(og, own_user))
    rows = halo[og.members.buffer_index(part, part.flat("user", mu)).to(dev)]
    e_mu = rows[:, : e_u.shape[1]]
    if cfg.interest_module == "embedding":
        interests = rows[:, e_u.shape[1] :].view(len(mu), cfg.interests, cfg.dim)
    elif model.disentangler is not None:
        interests = model.disentangler(e_mu)
    else:
        interests = None
    if interests is None:  # ablation A: mean of the members' embeddings
        count = torch.bincount(mg, minlength=n_g).clamp(min=1).to(e_u.dtype)
        i_star = torch.zeros_like(e_g).index_add(0, mg, e_mu) / count.unsqueeze(1)
    else:
        readout, _ = attention_readout(interests, mg, n_g, model.readout.w_att)
        if cfg.selection == "mean":  # ablation B
            i_star = readout.mean(dim=1)
        else:
            # the Gumbel noise of every group, drawn as one process draws it (gumbel_softmax:
            # U(0, 1) of shape [G, M] from the step's generator); this rank keeps its groups'
            psi = torch.einsum("gmd,gd->gm", readout, e_g)
            if noise:
                u = torch.rand((model.num_groups, cfg.interests), generator=generator)
                u = u[glo:ghi].to(psi.dtype).to(dev)
                u = u.clamp(torch.finfo(psi.dtype).tiny, 1.0 - torch.finfo(psi.dtype).eps)
                psi = psi - torch.log(-torch.log(u))
            w = gumbel_softmax(psi, cfg.tau, hard=cfg.hard, noise=False)
            i_star = torch.einsum("gm,gmd->gd", w, readout)
    e_star = fuse_groups(e_g, i_star)
    mean = og.split(og.pool.matmul(_group_local(og, e_star))[0])["user"]
    e_hat = torch.where(og.has_group, (e_u + mean) / 2, e_u)
    u0 = e_hat if cfg.propagate_fused_users else e_u
    h0 = _ui_local(og, u0, e_i)
    layers = propagate_partitioned(og.lightgcn, h0, model.layers)
    total = torch.stack(layers).sum(0)
    if cfg.layer_combine == "mean":
        total = total / (model.layers + 1)
    out = og.split(total)
    users, items = out["user"], out["item"]
    if not cfg.propagate_fused_users:
        users = users + (e_hat - e_u) / (1 if cfg.layer_combine == "sum" else model.layers + 1)
    group_items = e_i if cfg.group_item_rep == "raw" else items
    return {"user": users, "item": items, "group": e_star, "group_item": group_items}


def _user_local(og: OwnedGraphs, x: torch.Tensor) -> torch.Tensor:
    """Local layout with own users' rows ``x`` and zeros elsewhere."""
    z = x.new_zeros
    p = og.part
    n_i = p.range("item")[1] - p.range("item")[0]
    n_g = p.range("group")[1] - p.range("group")[0]
    return torch.cat([x, z(n_i, x.shape[1]), z(n_g, x.shape[1])])


def _group_local(og: OwnedGraphs, x: torch.Tensor) -> torch.Tensor:
    z = x.new_zeros
    p = og.part
    n_u = p.range("user")[1] - p.range("user")[0]
    n_i = p.range("item")[1] - p.range("item")[0]
    return torch.cat([z(n_u, x.shape[1]), z(n_i, x.shape[1]), x])


def _ui_local(og: OwnedGraphs, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    p = og.part
    n_g = p.range("group")[1] - p.range("group")[0]
    return torch.cat([u, i, u.new_zeros(n_g, u.shape[1])])


def gather_typed(
    og: OwnedGraphs, local: torch.Tensor, ids: dict[str, list[torch.Tensor]]
) -> dict[str, list[torch.Tensor]]:
    """Rows of ``local`` (local layout [n, F]) of typed id tensors, in one exchange (collective):
    ``{type: [rows [*x.shape, F] for each id tensor x]}``."""
    part = og.part
    flat = [part.flat(t, x.reshape(-1).cpu()) for t, xs in ids.items() for x in xs]
    rows = gather_rows(part, og.exchange, local, torch.cat(flat))
    out: dict[str, list[torch.Tensor]] = {}
    at = 0
    for t, xs in ids.items():
        out[t] = []
        for x in xs:
            out[t].append(rows[at : at + x.numel()].reshape(*x.shape, rows.shape[1]))
            at += x.numel()
    return out


def own_tables(model: IGRec, og: OwnedGraphs) -> dict[str, torch.Tensor]:
    """This rank's rows of every table (its local shard under row-wise sharding)."""
    pooled = model.ebc(og.kjt).to_dict()
    return {k: pooled[k][:n] for k, n in og.own_n.items()}


def forward_owned(model: IGRec, og: OwnedGraphs, d: dict[str, torch.Tensor], gen: torch.Generator):
    """Owned training step: the batch's rows of every representation and table, gathered from
    their owners. Returns ``(r, t, users, pos, neg, groups, gpos, gneg)`` like the one-process
    forward, ``r`` / ``t`` holding only those rows and the index tensors renumbered to them."""
    t = own_tables(model, og)
    r = represent_owned(model, og, t, generator=gen, noise=True)
    dim = r["user"].shape[1]
    # one local tensor: [final rep | group-task item rep | layer-0 row (| interest row)]
    cols = {
        "user": [r["user"], r["user"].new_zeros(r["user"].shape), t["user"]],
        "item": [r["item"], r["group_item"], t["item"]],
        "group": [r["group"], r["group"].new_zeros(r["group"].shape), t["group"]],
    }
    if "interest" in t:
        cols["user"].append(t["interest"])
        for k in ("item", "group"):
            cols[k].append(cols[k][0].new_zeros(len(cols[k][0]), t["interest"].shape[1]))
    local = torch.cat([torch.cat(cols[k], 1) for k in TYPES])
    ids = {
        "user": [d["users"]],
        "item": [d["pos"], d["neg"], d["gpos"], d["gneg"]],
        "group": [d["groups"]],
    }
    got = gather_typed(og, local, ids)
    cat = {k: torch.cat([x.reshape(-1, x.shape[-1]) for x in v]) for k, v in got.items()}
    rb = {
        "user": cat["user"][:, :dim],
        "item": cat["item"][:, :dim],
        "group_item": cat["item"][:, dim : 2 * dim],
        "group": cat["group"][:, :dim],
    }
    tb = {k: cat[k][:, 2 * dim : 3 * dim] for k in TYPES}
    if "interest" in t:
        tb["interest"] = cat["user"][:, 3 * dim :]

    def renumber(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out, o = [], 0
        for x in xs:
            out.append(torch.arange(o, o + x.numel(), device=x.device).reshape(x.shape))
            o += x.numel()
        return out

    (users,) = renumber(ids["user"])
    pos, neg, gpos, gneg = renumber(ids["item"])
    (groups,) = renumber(ids["group"])
    return rb, tb, users, pos, neg, groups, gpos, gneg


def eval_cache(model: IGRec, og: OwnedGraphs) -> torch.Tensor:
    """Noise-free representations of own rows, local layout [n, 2D]: rep | group-task rep."""
    gen = model.eval_generator()  # the member cap's draws (seeded, the same on every rank)
    r = represent_owned(model, og, own_tables(model, og), generator=gen, noise=False)
    z = r["user"].new_zeros
    return torch.cat(
        [
            torch.cat([r["user"], z(r["user"].shape)], 1),
            torch.cat([r["item"], r["group_item"]], 1),
            torch.cat([r["group"], z(r["group"].shape)], 1),
        ]
    )
