"""``write_tiny_bundle``: a small but complete, valid dataset bundle written with pyarrow only.

Used by the tests of every area until (and besides) the Spark jobs. Structure is planted so that
models can learn something: items fall into clusters, each user (and group) prefers one cluster.

Example::

    from tests.helpers.bundles import write_tiny_bundle
    path = write_tiny_bundle(tmp_path / "b", users=50, items=40, behaviors=("view", "buy"), groups=8)
    Bundle(path).graph("ui.buy")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.data.schema import (
    EVAL_ROWS,
    GRAPH,
    GRAPH_GROUP_ITEM,
    GRAPH_GROUP_USER,
    GRAPH_ITEM_COOC,
    GRAPH_USER_GROUP,
    GROUP_ITEMS,
    GROUP_MEMBERS,
    ID_MAP,
    INTERACTIONS,
    SEQUENCES,
    SPLITS,
    Manifest,
    TableInfo,
    iu_graph,
    schema_to_json,
    ui_graph,
)

PROTOCOL = "random_per_user"
GRAPH_NORM = {
    "ui.*": "sym: 1/sqrt(deg_src*deg_dst) over the behavior's train bipartite graph",
    "iu.*": "sym: 1/sqrt(deg_src*deg_dst) over the behavior's train bipartite graph",
    GRAPH_ITEM_COOC: "confidence S_ij = |users(i) & users(j)| / |users(i)|, target behavior, train",
    GRAPH_USER_GROUP: "row: 1/|groups(user)|",
    GRAPH_GROUP_USER: "row: 1/|members(group)|",
    GRAPH_GROUP_ITEM: "row: 1/|train items(group)|",
}


def write_tiny_bundle(
    path: str | os.PathLike[str],
    *,
    users: int = 40,
    items: int = 30,
    behaviors: tuple[str, ...] = ("buy",),
    groups: int = 0,
    seed: int = 0,
    per_user: int = 10,
    clusters: int = 3,
    eval_candidates: int = 0,
    graph_parts: int = 2,
    cooc: bool = True,
) -> Path:
    """Write a bundle to ``path`` and return it.

    Every user has ``per_user`` target-behavior interactions (distinct items, 80/10/10 per user:
    ``random_per_user``, at least one of each split); earlier behaviors of ``behaviors`` form a
    funnel (each is a superset of the next) and go to train only. With ``eval_candidates > 0``
    also writes ``eval/random_per_user`` rows with that many sampled negatives per user.
    ``cooc=False`` skips the ``item_cooc`` graph (its dense users x items product is O(U * I)).
    The held-out splits (valid, test) of ``interactions`` and ``groups/items`` are written as
    ``graph_parts`` files of contiguous user / group ranges, sorted (the Spark writer's layout).
    """
    if per_user < 3 or per_user > items:
        raise ValueError("per_user must be in [3, items]")
    rng = np.random.default_rng(seed)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, TableInfo] = {}
    item_cluster = np.arange(items) % clusters
    user_cluster = rng.integers(0, clusters, users)

    def pick_items(cluster: int, n: int) -> np.ndarray:
        # 80% of the probability mass on the preferred cluster: learnable but not trivial.
        p = np.where(item_cluster == cluster, 4.0, 1.0 / max(clusters - 1, 1))
        return rng.choice(items, size=n, replace=False, p=p / p.sum())

    # ---- target-behavior interactions, split per user
    rows: dict[str, list[tuple[int, int, int, int]]] = {s: [] for s in SPLITS}
    target = len(behaviors) - 1
    ts0 = 1_700_000_000
    funnel: list[tuple[int, int, int, int]] = []
    for u in range(users):
        chosen = pick_items(int(user_cluster[u]), per_user)
        ts = ts0 + np.sort(rng.integers(0, 10_000_000, per_user))
        n_valid = max(1, round(0.1 * per_user))
        n_test = max(1, round(0.1 * per_user))
        order = rng.permutation(per_user)
        split_of = np.empty(per_user, dtype=object)
        split_of[order[:n_test]] = "test"
        split_of[order[n_test : n_test + n_valid]] = "valid"
        split_of[order[n_test + n_valid :]] = "train"
        for k in range(per_user):
            rows[split_of[k]].append((u, int(chosen[k]), target, int(ts[k])))
            # funnel: every target event was preceded by each earlier behavior (train only)
            for b in range(target):
                if split_of[k] == "train" or rng.random() < 0.5:
                    funnel.append((u, int(chosen[k]), b, int(ts[k]) - 100 * (target - b)))
        for b in range(target):  # extra upper-funnel events on other items
            extra = pick_items(int(user_cluster[u]), min(items, per_user))[: 2 * (target - b)]
            funnel.extend((u, int(i), b, ts0 + int(rng.integers(0, 10_000_000))) for i in extra)
    rows["train"].extend(funnel)

    counts: dict[str, int] = {"users": users, "items": items, "groups": groups}
    for s in SPLITS:
        arr = np.array(rows[s], dtype=np.int64).reshape(-1, 4)
        t = pa.table(
            {
                "user": arr[:, 0],
                "item": arr[:, 1],
                "behavior": arr[:, 2].astype(np.int8),
                "ts": arr[:, 3],
            },
            schema=INTERACTIONS,
        )
        if s == "train":
            _write(root / "interactions" / f"split={s}" / "part-00000.parquet", t)
        else:
            _write_ranges(root / "interactions" / f"split={s}", t, "user", users, graph_parts)
        counts[f"interactions.{s}"] = t.num_rows
    tables["interactions"] = _info(
        "interactions", sum(len(r) for r in rows.values()), INTERACTIONS, "split"
    )
    train = np.array(rows["train"], dtype=np.int64).reshape(-1, 4)
    for b, name in enumerate(behaviors):
        counts[f"behavior.{name}"] = int(sum(sum(1 for r in rows[s] if r[2] == b) for s in SPLITS))

    # ---- ids: raw ids are a permutation so idx != raw number (catches mapping bugs)
    for kind, n, prefix in (("users", users, "u"), ("items", items, "i"), ("groups", groups, "g")):
        raw = [f"{prefix}{v}" for v in rng.permutation(n) * 3 + 1]
        t = pa.table({"raw_id": raw, "idx": np.arange(n, dtype=np.int64)}, schema=ID_MAP)
        _write(root / "ids" / kind / "part-00000.parquet", t)
        tables[f"ids/{kind}"] = _info(f"ids/{kind}", n, ID_MAP)

    # ---- per-behavior bipartite graphs, symmetric normalisation
    graphs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
    for b, name in enumerate(behaviors):
        sel = train[train[:, 2] == b]
        pairs = np.unique(sel[:, :2], axis=0)
        u, i = pairs[:, 0], pairs[:, 1]
        du = np.bincount(u, minlength=users)
        di = np.bincount(i, minlength=items)
        w = (1.0 / np.sqrt(du[u] * di[i])).astype(np.float32)
        graphs[ui_graph(name)] = (u, i, w, users)
        graphs[iu_graph(name)] = (i, u, w, items)

    # ---- item co-occurrence confidence over train target interactions
    if cooc:
        tp = np.unique(train[train[:, 2] == target][:, :2], axis=0)
        m = np.zeros((users, items), dtype=np.float32)
        m[tp[:, 0], tp[:, 1]] = 1.0
        co = m.T @ m
        cnt = np.diag(co).copy()
        np.fill_diagonal(co, 0.0)
        s_i, s_j = np.nonzero(co)
        graphs[GRAPH_ITEM_COOC] = (s_i, s_j, (co[s_i, s_j] / cnt[s_i]).astype(np.float32), items)

    # ---- groups: members share a cluster; group-item pairs split 80/10/10 per group
    if groups:
        g_cluster = rng.integers(0, clusters, groups)
        mem: list[tuple[int, int]] = []
        for g in range(groups):
            pool = np.flatnonzero(user_cluster == g_cluster[g])
            pool = pool if pool.size >= 2 else np.arange(users)
            size = int(rng.integers(2, min(5, pool.size) + 1))
            mem.extend((g, int(x)) for x in rng.choice(pool, size=size, replace=False))
        marr = np.array(mem, dtype=np.int64)
        t = pa.table({"group": marr[:, 0], "user": marr[:, 1]}, schema=GROUP_MEMBERS)
        _write(root / "groups" / "members" / "part-00000.parquet", t)
        tables["groups/members"] = _info("groups/members", t.num_rows, GROUP_MEMBERS)
        gi: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
        for g in range(groups):
            chosen = pick_items(int(g_cluster[g]), min(items, 6))
            for k, it in enumerate(chosen):
                s = "test" if k == 0 else "valid" if k == 1 else "train"
                gi[s].append((g, int(it)))
        for s in SPLITS:
            arr = np.array(gi[s], dtype=np.int64).reshape(-1, 2)
            t = pa.table({"group": arr[:, 0], "item": arr[:, 1]}, schema=GROUP_ITEMS)
            d = root / "groups" / "items" / f"split={s}"
            if s == "train":
                _write(d / "part-00000.parquet", t)
            else:
                _write_ranges(d, t, "group", groups, graph_parts)
        tables["groups/items"] = _info(
            "groups/items", sum(len(v) for v in gi.values()), GROUP_ITEMS, "split"
        )
        gu, uu = marr[:, 0], marr[:, 1]
        graphs[GRAPH_GROUP_USER] = (
            gu,
            uu,
            (1.0 / np.bincount(gu, minlength=groups)[gu]).astype(np.float32),
            groups,
        )
        graphs[GRAPH_USER_GROUP] = (
            uu,
            gu,
            (1.0 / np.bincount(uu, minlength=users)[uu]).astype(np.float32),
            users,
        )
        ga = np.array(gi["train"], dtype=np.int64)
        graphs[GRAPH_GROUP_ITEM] = (
            ga[:, 0],
            ga[:, 1],
            (1.0 / np.bincount(ga[:, 0], minlength=groups)[ga[:, 0]]).astype(np.float32),
            groups,
        )

    for name, (src, dst, w, n_src) in graphs.items():
        n = _write_graph(root / "graphs" / name, src, dst, w, n_src, graph_parts)
        tables[f"graphs/{name}"] = _info(f"graphs/{name}", n, GRAPH, "src_range")

    # ---- sequences: chronological train target interactions per user
    tt = train[train[:, 2] == target]
    tt = tt[np.lexsort((tt[:, 3], tt[:, 0]))]
    bounds = np.searchsorted(tt[:, 0], np.arange(users + 1))
    seq = pa.table(
        {
            "user": np.arange(users, dtype=np.int64),
            "items": [tt[bounds[u] : bounds[u + 1], 1].tolist() for u in range(users)],
            "ts": [tt[bounds[u] : bounds[u + 1], 3].tolist() for u in range(users)],
        },
        schema=SEQUENCES,
    )
    _write(root / "sequences" / "part-00000.parquet", seq)
    tables["sequences"] = _info("sequences", users, SEQUENCES)

    # ---- optional sampled-candidate evaluation rows
    if eval_candidates:
        seen: dict[int, set[int]] = {u: set() for u in range(users)}
        for s in SPLITS:
            for r in rows[s]:
                seen[r[0]].add(r[1])
        for s in ("valid", "test"):
            by_user: dict[int, list[int]] = {}
            for r in rows[s]:
                by_user.setdefault(r[0], []).append(r[1])
            recs = []
            for u, tg in sorted(by_user.items()):
                pool = np.array([i for i in range(items) if i not in seen[u]], dtype=np.int64)
                cand = rng.choice(pool, size=min(eval_candidates, pool.size), replace=False)
                recs.append((u, [], [], tg, sorted(tg + cand.tolist())))
            t = pa.table(list(zip(*recs, strict=True)), schema=EVAL_ROWS)
            _write(root / "eval" / PROTOCOL / f"split={s}" / "part-00000.parquet", t)
        tables[f"eval/{PROTOCOL}"] = _info(f"eval/{PROTOCOL}", users * 2, EVAL_ROWS, "split")

    manifest = Manifest(
        name=f"tiny-{seed}",
        source="tests.helpers.bundles",
        counts=counts,
        behaviors=list(behaviors),
        split={"protocol": PROTOCOL, "ratios": [0.8, 0.1, 0.1], "seed": seed},
        tables=tables,
        filters={"graph_norm": GRAPH_NORM},
        created_by="tests.helpers.bundles.write_tiny_bundle",
    )
    manifest.write(str(root))
    return root


def _info(path: str, rows: int, schema: pa.Schema, partitioned_by: str | None = None) -> TableInfo:
    return TableInfo(
        path=path, rows=int(rows), schema=schema_to_json(schema), partitioned_by=partitioned_by
    )


def _write(path: Path, t: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)


def _write_ranges(d: Path, t: pa.Table, key: str, n_keys: int, parts: int) -> None:
    """``t`` sorted by ``key`` (then item) as files ``part-<lo>-<hi>.parquet`` of contiguous
    ``key`` ranges on the Spark writer's bounds (a held-out split's layout)."""
    t = t.sort_by([(key, "ascending"), ("item", "ascending")])
    col = t.column(key).to_numpy()
    edges = [k * n_keys // parts for k in range(parts + 1)]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        a, b = np.searchsorted(col, [lo, hi])
        _write(d / f"part-{lo:08d}-{hi:08d}.parquet", t.slice(int(a), int(b - a)))


def _write_graph(
    d: Path, src: np.ndarray, dst: np.ndarray, w: np.ndarray, n_src: int, parts: int
) -> int:
    """One row per source node (sorted dst), files ``part-<lo>-<hi>.parquet`` by src range."""
    order = np.lexsort((dst, src))
    src, dst, w = src[order], dst[order], w[order]
    nodes, starts = np.unique(src, return_index=True)
    ends = np.append(starts[1:], src.size)
    edges = [k * n_src // parts for k in range(parts + 1)]  # the Spark writer's bounds
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (nodes >= lo) & (nodes < hi)
        t = pa.table(
            {
                "src": nodes[sel],
                "dst": [dst[a:b].tolist() for a, b in zip(starts[sel], ends[sel], strict=True)],
                "w": [w[a:b].tolist() for a, b in zip(starts[sel], ends[sel], strict=True)],
            },
            schema=GRAPH,
        )
        _write(d / f"part-{lo:08d}-{hi:08d}.parquet", t)
    return int(nodes.size)
