"""IGRec in ``sampled`` graph mode: the batch's neighbourhood, then the same model on it.

A user's layer-0 input to the LightGCN predictor is ``e_u_hat`` (Eq. 9), which pools ``e*_g`` of
every group of the user, and ``e*_g`` (Eq. 8) reads out the group's members. So one step needs,
outward from the seeds (this rank's users, pos/neg items, groups and their pos/neg items):

1. L hops of user-item blocks from the one sampler (:func:`distrec.graph.sampler.sample_blocks`;
   group-task items are item seeds too, so their raw rows and propagated reps both come along);
2. every group of every user of the outermost frontier ``U_L`` (the mean pooling of Eq. 9);
3. the members of those groups and of the seed groups, at most ``model.member_cap`` per group
   (counter-based draws: a group's members depend only on (step, group), like the neighbours).

Rows are looked up for ``U_L`` followed by the extra members, the item frontier ``I_L`` and the
groups, each list deduplicated; the frontiers are prefixes of the lookups, so the seeds' local
ids index the looked-up tables and the propagated reps alike. Gumbel noise is drawn for every
group and the batch's rows kept (:func:`represent_sampled`), so with unlimited fanout and a member
cap that never binds, the loss equals ``full`` mode's, values and gradients, at any world size.

Shapes: b users, bg groups, K negatives, S_k frontier sizes, E member edges, M interests, D dim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from distrec.data.csr import Csr
from distrec.graph.adjacency import bipartite_graph
from distrec.graph.propagate import combine_layers, propagate_blocks
from distrec.graph.sampler import Blocks, draw_offsets, node_keys, sample_blocks
from distrec.models.igrec.aggregator import attention_readout, select_interests
from distrec.models.igrec.fusion import fuse_groups, fuse_users
from distrec.models.igrec.graphs import IGRecGraphs

if TYPE_CHECKING:
    from distrec.models.igrec.model import IGRec

RELATIONS = {"ui": ("user", "item"), "iu": ("item", "user")}


def _slots(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of every id in the (unsorted, duplicate-free) ``table``."""
    order = np.argsort(table, kind="stable")
    return order[np.searchsorted(table, ids, sorter=order)]


class IGRecSampler:
    """Per-step neighbourhoods for IGRec (numpy; runs in the data adapter).

    Example::

        s = IGRecSampler(graphs, layers=2, fanout=[10, 5], member_cap=8)
        payload = s.sample(users, pos, neg, groups, gpos, gneg, step_rng(seed, epoch, step, 3))
    """

    def __init__(
        self,
        g: IGRecGraphs,
        *,
        layers: int,
        fanout: list[int] | None,
        fanout_over: str = "relation",
        max_frontier: int = 0,
        member_cap: int = 0,
    ) -> None:
        ui = Csr.from_pairs(g.ui_user, g.ui_item, g.num_users, g.num_items, g.ui_weights())
        self.graph = bipartite_graph(ui)
        self.user_groups = Csr.from_pairs(g.member_user, g.member_group, g.num_users, g.num_groups)
        self.members = Csr.from_pairs(g.member_group, g.member_user, g.num_groups, g.num_users)
        self.layers, self.fanout = layers, list(fanout or [])
        self.fanout_over, self.max_frontier, self.member_cap = fanout_over, max_frontier, member_cap

    def sample(
        self,
        users: np.ndarray,
        pos: np.ndarray,
        neg: np.ndarray,
        groups: np.ndarray,
        gpos: np.ndarray,
        gneg: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """numpy payload of one rank's step (keys in :func:`represent_sampled`'s docstring):
        ``users`` [b], ``pos`` [b], ``neg`` [b, K], ``groups`` [bg], ``gpos`` [bg], ``gneg``
        [bg, K] are global ids; the returned index arrays are local."""
        b, bg, k = len(users), len(groups), neg.shape[1] if neg.ndim == 2 else 0
        items = np.concatenate([pos, neg.reshape(-1), gpos, gneg.reshape(-1)]).astype(np.int64)
        blocks = sample_blocks(
            {"user": users, "item": items},
            self.graph,
            self.layers,
            self.fanout,
            rng,
            fanout_over=self.fanout_over,
            max_frontier=self.max_frontier,
        )
        u_l = blocks.input_nodes()["user"].numpy()
        i_l = blocks.input_nodes()["item"].numpy()
        # 2. all groups of the outermost users (mean pooling over G(u), Eq. 9)
        ug = self.user_groups
        slot, off, _ = draw_offsets(ug.degrees()[u_l], 0, np.zeros(len(u_l), np.uint64))
        pool_g = ug.indices[ug.indptr[u_l][slot] + off]
        pool_w = (1.0 / ug.degrees()[u_l][slot]).astype(np.float32)
        g_need = np.unique(np.concatenate([groups.astype(np.int64), pool_g]))
        # 3. members of those groups, at most member_cap each
        salt = int(rng.integers(0, 2**62))
        gm = self.members
        m_slot, m_off, _ = draw_offsets(
            gm.degrees()[g_need], self.member_cap, node_keys(salt, g_need)
        )
        m_user = gm.indices[gm.indptr[g_need][m_slot] + m_off]
        extra = np.unique(m_user)
        extra = extra[~np.isin(extra, u_l)]
        fetch_user = np.concatenate([u_l, extra])
        item_seed = blocks.seed_index["item"].numpy()
        out = {
            "fetch.user": fetch_user,
            "fetch.item": i_l,
            "fetch.group": g_need,
            "users": blocks.seed_index["user"].numpy(),
            "pos": item_seed[:b],
            "neg": item_seed[b : b + b * k].reshape(b, k),
            "gpos": item_seed[b + b * k : b + b * k + bg],
            "gneg": item_seed[b + b * k + bg :].reshape(bg, k),
            "groups": np.searchsorted(g_need, groups),
            "mem.g": m_slot,
            "mem.u": _slots(fetch_user, m_user),
            "pool.u": slot,
            "pool.g": np.searchsorted(g_need, pool_g),
            "pool.w": pool_w,
        }
        out.update({key: v.numpy() for key, v in blocks.to_dense("g").items()})
        return out


def represent_sampled(
    model: IGRec,
    t: dict[str, torch.Tensor],
    d: dict[str, torch.Tensor],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """:meth:`IGRec.represent` on a sampled neighbourhood.

    ``t``: looked-up rows ``user`` [S_user, D] (``fetch.user`` order: U_L then extra members),
    ``item`` [S_L item, D], ``group`` [G', D] (``fetch.group``), ``interest`` like ``user``.
    ``d``: the payload of :meth:`IGRecSampler.sample` as tensors (``g.*`` blocks, ``mem.g`` /
    ``mem.u`` [E] member edges, ``pool.u`` / ``pool.g`` / ``pool.w`` user-group pooling edges,
    ``fetch.group`` [G'] global group ids).

    Returns ``user`` [S_0 user, D], ``item`` [S_0 item, D] (seed slots), ``group`` [G', D] and
    ``group_item`` [S_0 item, D].
    """
    cfg = model.cfg
    blocks = Blocks.from_dense(d, RELATIONS, "g")
    e_u, e_i, e_g = t["user"], t["item"], t["group"]
    n_ul = len(blocks.input_nodes()["user"])
    mg, mu = d["mem.g"], d["mem.u"]
    n_g = e_g.shape[0]
    interests = model._interests(t, mu)  # [E, M, D] or None
    if interests is None:  # ablation A: mean of the members' embeddings
        count = torch.bincount(mg, minlength=n_g).clamp(min=1).to(e_u.dtype)
        i_star = torch.zeros_like(e_g).index_add(0, mg, e_u[mu]) / count.unsqueeze(1)
    else:
        readout, _ = attention_readout(interests, mg, n_g, model.readout.w_att)
        if cfg.selection == "mean":  # ablation B
            i_star = readout.mean(dim=1)
        else:
            # noise for every group, as full mode draws it; keep the batch's groups' rows
            u_all = torch.rand((model.num_groups, readout.shape[1]), generator=generator)
            i_star, _ = select_interests(
                readout,
                e_g,
                cfg.tau,
                hard=cfg.hard,
                noise=True,
                uniform=u_all[d["fetch.group"].cpu()].to(e_g.device),
            )
    e_star = fuse_groups(e_g, i_star)
    pu, pg = d["pool.u"], d["pool.g"]
    pool = torch.sparse_coo_tensor(
        torch.stack([pu, pg]), d["pool.w"].to(e_u.dtype), (n_ul, n_g), check_invariants=False
    ).coalesce()
    e_hat = fuse_users(e_u[:n_ul], e_star, pu, pg, pool)
    u0 = e_hat if cfg.propagate_fused_users else e_u[:n_ul]
    layers = propagate_blocks(blocks, {"user": u0, "item": e_i})
    n = len(layers)
    comb = combine_layers(layers, [1.0 / n if cfg.layer_combine == "mean" else 1.0] * n)
    users, items = comb["user"], comb["item"]
    if not cfg.propagate_fused_users:
        n0 = users.shape[0]
        users = users + (e_hat[:n0] - e_u[:n0]) / (1 if cfg.layer_combine == "sum" else n)
    group_items = e_i[: items.shape[0]] if cfg.group_item_rep == "raw" else items
    return {"user": users, "item": items, "group": e_star, "group_item": group_items}
