"""The planted structure of the synthetic logs (vectorised numpy; no I/O). Used by distrec.synth.

* Items fall into C interest clusters; within a cluster popularity is a power law (Zipf, alpha).
* Every user has 1..3 interests (clusters) with Dirichlet mixture weights.
* Interest drift: at the fraction tau in [0, 1] of a user's history the logit of interest j is
  shifted by ``drift * (tau - 0.5) * (j - (n - 1) / 2)``: later events favour later interests.
* A share ``noise`` of events ignores the interests (global popularity): what Popularity learns.
* Sequences: with probability ``stickiness`` an event keeps the previous event's cluster.
* Funnel (multibehavior): every event is a view; fav / cart / buy(|cart) follow with
  probabilities that grow with the user's interest strength in the item's cluster.
* Groups form around one shared interest: members are users with that interest; group events
  are mostly items of that cluster.

Shapes: N users, M items, C clusters, E events of a block, J = 3 interest slots per user.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MAX_INTERESTS = 3
FUNNEL = ("view", "cart", "fav", "buy")  # most to least frequent, target last


@dataclass
class Planted:
    """Parameters recorded in meta.json so that tests and papers' readers know the truth."""

    interests: int  # C clusters
    interests_per_user: tuple[int, int] = (1, MAX_INTERESTS)
    zipf_alpha: float = 1.0
    noise: float = 0.1
    drift: float = 4.0
    stickiness: float = 0.0
    funnel: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "fav": (0.05, 0.35),
            "cart": (0.08, 0.5),
            "buy_given_cart": (0.15, 0.45),
        }
    )
    time_start: int = 1_600_000_000
    time_span: int = 365 * 86400
    mean_gap: int = 3600

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class World:
    """Items, clusters and user profiles; O(N + M) memory, events are drawn block by block."""

    def __init__(self, users: int, items: int, p: Planted, rng: np.random.Generator) -> None:
        self.n_users, self.n_items, self.p = users, items, p
        c = p.interests
        # items -> cluster: a random balanced assignment; popularity rank inside the cluster
        self.item_cluster = rng.permutation(np.arange(items) % c).astype(np.int64)
        order = np.lexsort((rng.random(items), self.item_cluster))  # by cluster, random rank
        self.cluster_items = order.astype(np.int64)  # items grouped by cluster, rank order
        sizes = np.bincount(self.item_cluster, minlength=c)
        self.cluster_start = np.concatenate([[0], np.cumsum(sizes)])
        rank = np.arange(items) - np.repeat(self.cluster_start[:-1], sizes)
        w = (rank + 1.0) ** -p.zipf_alpha
        # cdf within each cluster, shifted by the cluster id: one searchsorted draws any cluster
        within = np.zeros(items)
        for k in range(c):
            lo, hi = self.cluster_start[k], self.cluster_start[k + 1]
            within[lo:hi] = np.cumsum(w[lo:hi]) / w[lo:hi].sum()
        self._keyed_cdf = np.arange(c).repeat(sizes) + within
        self._keyed_cdf[self.cluster_start[1:] - 1] = np.arange(1, c + 1)  # exact ends
        self._global_cdf = np.cumsum(w) / w.sum()
        # cluster weight in the world: bigger clusters attract more users
        self.cluster_pop = (sizes / sizes.sum()) ** 0.5
        self.cluster_pop /= self.cluster_pop.sum()
        lo_n, hi_n = p.interests_per_user
        self.n_int = rng.integers(lo_n, min(hi_n, c) + 1, users)
        self.interests = np.full((users, MAX_INTERESTS), -1, dtype=np.int64)
        self.weights = np.zeros((users, MAX_INTERESTS), dtype=np.float64)
        for j in range(MAX_INTERESTS):
            self.interests[:, j] = rng.choice(c, size=users, p=self.cluster_pop)
        # distinct interests per user: resample collisions a few times, then drop them
        for _ in range(10):
            dup = _dups(self.interests)
            if not dup.any():
                break
            self.interests[dup] = rng.choice(c, size=int(dup.sum()), p=self.cluster_pop)
        slot = np.arange(MAX_INTERESTS)[None, :]
        self.interests[(slot >= self.n_int[:, None]) | _dups(self.interests)] = -1
        self.n_int = (self.interests >= 0).sum(1)
        g = rng.gamma(1.0, size=(users, MAX_INTERESTS)) * (self.interests >= 0)
        self.weights = g / g.sum(1, keepdims=True)
        # pack valid interests first (drift is defined over their order)
        pack = np.argsort(self.interests < 0, axis=1, kind="stable")
        self.interests = np.take_along_axis(self.interests, pack, 1)
        self.weights = np.take_along_axis(self.weights, pack, 1)

    # ------------------------------------------------------------------ draws
    def draw_items(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``clusters`` [E] (power law within the cluster)."""
        pos = np.searchsorted(
            self._keyed_cdf, clusters + rng.random(clusters.shape[0]), side="left"
        )
        return self.cluster_items[np.minimum(pos, self.n_items - 1)]

    def draw_popular(self, n: int, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(self._global_cdf, rng.random(n), side="left")
        return self.cluster_items[np.minimum(pos, self.n_items - 1)]

    def strength(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Weight of the item's cluster in each user's interest mixture [E] (0 = not an interest)."""
        hit = self.interests[users] == self.item_cluster[items][:, None]
        return (self.weights[users] * hit).sum(1)

    def user_events(
        self, lo: int, hi: int, per_user: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Primary events (views / clicks / buys) of users lo..hi-1 in time order per user:
        ``user``, ``item``, ``ts`` [E] and ``strength`` [E]."""
        p = self.p
        n = hi - lo
        k = np.maximum(3, 3 + rng.poisson(max(per_user - 3, 0), n))
        users = np.repeat(np.arange(lo, hi), k)
        e = users.shape[0]
        first = np.concatenate([[0], np.cumsum(k)[:-1]])
        pos = np.arange(e) - np.repeat(first, k)
        tau = pos / np.maximum(np.repeat(k, k) - 1, 1)
        n_int = self.n_int[users]
        slot = np.arange(MAX_INTERESTS)[None, :]
        logits = np.log(np.maximum(self.weights[users], 1e-12))
        logits += p.drift * (tau[:, None] - 0.5) * (slot - (n_int[:, None] - 1) / 2.0)
        logits[slot >= n_int[:, None]] = -np.inf
        pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        cl = self.interests[users, pick]
        if p.stickiness > 0:  # keep the previous event's cluster: forward-fill from fresh events
            fresh = (rng.random(e) >= p.stickiness) | (pos == 0)
            src = np.maximum.accumulate(np.where(fresh, np.arange(e), 0))
            cl = cl[src]
        items = self.draw_items(cl, rng)
        noisy = rng.random(e) < p.noise
        items[noisy] = self.draw_popular(int(noisy.sum()), rng)
        start = rng.integers(p.time_start, p.time_start + p.time_span // 2, n)
        gaps = rng.exponential(p.mean_gap, e).astype(np.int64) + 1
        csum = np.cumsum(gaps)
        ts = np.repeat(start, k) + csum - np.repeat(csum[first] - gaps[first], k)
        return {"user": users, "item": items, "ts": ts, "strength": self.strength(users, items)}

    def funnel(self, ev: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Expand views into rows of behaviors view=0, cart=1, fav=2, buy=3 (``FUNNEL`` order)."""
        f = self.p.funnel
        s = ev["strength"]
        e = s.shape[0]
        fav = rng.random(e) < f["fav"][0] + f["fav"][1] * s
        cart = rng.random(e) < f["cart"][0] + f["cart"][1] * s
        buy = cart & (rng.random(e) < f["buy_given_cart"][0] + f["buy_given_cart"][1] * s)
        parts = [
            (np.ones(e, dtype=bool), 0, 0),
            (cart, 1, 60),
            (fav, 2, 30),
            (buy, 3, 600),
        ]
        out = {k: np.concatenate([ev[k][m] for m, _, _ in parts]) for k in ("user", "item")}
        out["ts"] = np.concatenate([ev["ts"][m] + d for m, _, d in parts])
        out["behavior"] = np.concatenate([np.full(int(m.sum()), b) for m, b, _ in parts])
        order = np.lexsort((out["ts"], out["user"]))
        return {k: v[order] for k, v in out.items()}

    def groups(
        self, n_groups: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Group clusters [G] and members as (group, user) pairs [P]; members share the cluster."""
        c = self.p.interests
        holders = self.interests.reshape(-1)
        who = np.repeat(np.arange(self.n_users), MAX_INTERESTS)[holders >= 0]
        holders = holders[holders >= 0]
        order = np.argsort(holders, kind="stable")
        pool, sizes = who[order], np.bincount(holders, minlength=c)
        pstart = np.concatenate([[0], np.cumsum(sizes)])
        usable = np.flatnonzero(sizes >= 2)
        pp = self.cluster_pop[usable] / self.cluster_pop[usable].sum()
        g_cl = usable[rng.choice(usable.shape[0], n_groups, p=pp)]
        size = np.minimum(rng.integers(2, 9, n_groups), sizes[g_cl])
        gid = np.repeat(np.arange(n_groups), size)
        pick = pstart[g_cl][gid] + (rng.random(gid.shape[0]) * sizes[g_cl][gid]).astype(np.int64)
        pairs = np.unique(np.stack([gid, pool[pick]], 1), axis=0)
        return g_cl, pairs[:, 0], pairs[:, 1]


def _dups(a: np.ndarray) -> np.ndarray:
    """True where a row's entry equals an earlier entry of the same row (valid ids only)."""
    out = np.zeros(a.shape, dtype=bool)
    for j in range(1, a.shape[1]):
        out[:, j] = ((a[:, :j] == a[:, j : j + 1]) & (a[:, j : j + 1] >= 0)).any(1)
    return out
