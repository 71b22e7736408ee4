"""Vectorised synthetic 4-behavior bundle for the CIGF throughput bench at 10^6 users.

    python bench/cigf_synth.py --users 1000000 --items 50000 --out /tmp/cigf_synth_1m

``tests/helpers/bundles.write_tiny_bundle`` (what ``bench/cigf_bench.py`` uses by default) loops
over users in Python and keeps every row as a tuple: fine at 20,000 users, minutes and gigabytes
at 10^6. This writer draws everything with numpy in one pass, same schema and the same shape of
data: a purchase funnel ``view, cart, fav, buy`` (target last), each user with ``--per-user``
distinct buys (one to valid, one to test, the rest to train), every train buy preceded by a fav,
a cart and a view of the same item, plus ``--extra`` more events per upper behavior on other
items; items drawn 80% from the user's cluster (``--clusters``), so the data is learnable.
Graphs ``ui.<b>`` / ``iu.<b>`` carry ``1/sqrt(deg_u deg_i)`` per behavior (the bundle contract).
No sequences, co-occurrence graph or eval tables (CIGF's trainer does not read them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
BEHAVIORS = ("view", "cart", "fav", "buy")


def _draw(
    rng: np.random.Generator, user_cluster: np.ndarray, items: int, clusters: int
) -> np.ndarray:
    """One item per entry of ``user_cluster``: 80% within the user's cluster, else uniform."""
    n = user_cluster.size
    per = items // clusters
    own = user_cluster * per + rng.integers(0, per, n)
    other = rng.integers(0, items, n)
    return np.where(rng.random(n) < 0.8, own, other)


def _write_graph(
    d: Path, src: np.ndarray, dst: np.ndarray, w: np.ndarray, n_src: int, parts: int
) -> int:
    """CSR rows (src, dst list, w list) in ``parts`` files by src range; -> number of sources."""
    from distrec.data.schema import GRAPH

    order = np.lexsort((dst, src))
    src, dst, w = src[order], dst[order], w[order]
    nodes, starts, counts = np.unique(src, return_index=True, return_counts=True)
    offsets = np.append(starts, src.size).astype(np.int64)
    edges = [int(x) for x in np.linspace(0, n_src, parts + 1).round()]
    d.mkdir(parents=True, exist_ok=True)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        a, b = np.searchsorted(nodes, [lo, hi])
        if a == b:
            continue
        off = offsets[a : b + 1] - offsets[a]
        e0, e1 = int(offsets[a]), int(offsets[b])
        t = pa.table(
            {
                "src": nodes[a:b],
                "dst": pa.ListArray.from_arrays(
                    pa.array(off.astype(np.int32)), pa.array(dst[e0:e1])
                ),
                "w": pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(w[e0:e1])),
            },
            schema=GRAPH,
        )
        pq.write_table(t, d / f"part-{lo:012d}-{hi - 1:012d}.parquet")
    del counts
    return int(nodes.size)


def write_synth_bundle(
    out: Path,
    *,
    users: int,
    items: int,
    per_user: int = 3,
    extra: int = 1,
    clusters: int = 10,
    seed: int = 0,
    graph_parts: int = 8,
) -> dict[str, int]:
    """Write the bundle to ``out``; returns its counts."""
    sys.path.insert(0, str(REPO))
    from distrec.data.schema import GRAPH, ID_MAP, INTERACTIONS, Manifest, TableInfo, schema_to_json

    if per_user < 3:
        raise ValueError("--per-user must be >= 3 (one valid, one test, at least one train buy)")
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, clusters, users)
    target = len(BEHAVIORS) - 1

    # buys: per_user draws per user, deduplicated per user; first to test, second to valid
    u = np.repeat(np.arange(users, dtype=np.int64), per_user)
    i = _draw(rng, user_cluster[u], items, clusters)
    key = np.unique(u * items + i)
    u, i = key // items, key % items
    # rank of each pair within its user, in a random order: 0 -> test, 1 -> valid, rest train
    perm = rng.permutation(u.size)
    u_p = u[perm]
    order = np.argsort(u_p, kind="stable")
    first = np.searchsorted(u_p[order], u_p[order], side="left")
    rank = np.empty(u.size, dtype=np.int64)
    rank[perm[order]] = np.arange(u.size) - first
    split = np.where(rank == 0, 0, np.where(rank == 1, 1, 2))  # 0 test, 1 valid, 2 train
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, int]]] = {
        "train": [],
        "valid": [],
        "test": [],
    }
    parts["test"].append((u[split == 0], i[split == 0], target))
    parts["valid"].append((u[split == 1], i[split == 1], target))
    tu, ti = u[split == 2], i[split == 2]
    train_pairs = {BEHAVIORS[target]: (tu, ti)}
    for b in range(target):  # funnel: the train buys plus `extra` * (target - b) other items
        n_extra = extra * (target - b)
        eu = np.repeat(np.arange(users, dtype=np.int64), n_extra)
        ei = _draw(rng, user_cluster[eu], items, clusters)
        key = np.unique(np.concatenate([tu * items + ti, eu * items + ei]))
        train_pairs[BEHAVIORS[b]] = (key // items, key % items)
    for b, name in enumerate(BEHAVIORS):
        parts["train"].append((*train_pairs[name], b))

    tables: dict[str, TableInfo] = {}

    def info(path: str, rows: int, schema: pa.Schema, by: str | None = None) -> TableInfo:
        return TableInfo(
            path=path, rows=int(rows), schema=schema_to_json(schema), partitioned_by=by
        )

    counts: dict[str, int] = {"users": users, "items": items, "groups": 0}
    total = 0
    for s, lst in parts.items():
        su = np.concatenate([p[0] for p in lst])
        si = np.concatenate([p[1] for p in lst])
        sb = np.concatenate([np.full(p[0].size, p[2], np.int8) for p in lst])
        t = pa.table(
            {"user": su, "item": si, "behavior": sb, "ts": pa.nulls(su.size, pa.int64())},
            schema=INTERACTIONS,
        )
        d = out / "interactions" / f"split={s}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / "part-00000.parquet")
        counts[f"interactions.{s}"] = int(su.size)
        total += int(su.size)
    tables["interactions"] = info("interactions", total, INTERACTIONS, "split")
    for name, (pu, _) in train_pairs.items():
        counts[f"behavior.{name}"] = int(pu.size)
    for kind, n in (("users", users), ("items", items)):
        t = pa.table(
            {"raw_id": pa.array(np.arange(n).astype(str)), "idx": np.arange(n, dtype=np.int64)},
            schema=ID_MAP,
        )
        (out / "ids" / kind).mkdir(parents=True, exist_ok=True)
        pq.write_table(t, out / "ids" / kind / "part-00000.parquet")
        tables[f"ids/{kind}"] = info(f"ids/{kind}", n, ID_MAP)
    for name, (pu, pi) in train_pairs.items():
        du = np.bincount(pu, minlength=users).astype(np.float64)
        di = np.bincount(pi, minlength=items).astype(np.float64)
        w = (1.0 / np.sqrt(du[pu] * di[pi])).astype(np.float32)
        for rel, s_, d_, n in (("ui", pu, pi, users), ("iu", pi, pu, items)):
            k = _write_graph(out / "graphs" / f"{rel}.{name}", s_, d_, w, n, graph_parts)
            tables[f"graphs/{rel}.{name}"] = info(f"graphs/{rel}.{name}", k, GRAPH, "src_range")
    Manifest(
        name=f"cigf-synth-{users}",
        source="bench/cigf_synth.py",
        counts=counts,
        behaviors=list(BEHAVIORS),
        split={
            "protocol": "random_per_user",
            "note": "1 test + 1 valid buy per user",
            "seed": seed,
        },
        tables=tables,
        filters={"graph_norm": "1/sqrt(deg_u*deg_i) per behavior"},
        created_by="bench/cigf_synth.py",
    ).write(str(out))
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/cigf_synth.py", description=__doc__)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--per-user", type=int, default=3)
    p.add_argument("--extra", type=int, default=1)
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    counts = write_synth_bundle(
        Path(a.out),
        users=a.users,
        items=a.items,
        per_user=a.per_user,
        extra=a.extra,
        clusters=a.clusters,
        seed=a.seed,
    )
    print(counts, f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
