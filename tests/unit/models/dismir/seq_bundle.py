"""A tiny ``user_holdout`` sequence bundle for the DisMIR / sequence-adapter tests.

Items fall into ``clusters`` clusters; every user has two favourite clusters and alternates
between them in runs, so a multi-interest model has something to learn. Users are split
8:1:1; valid/test users' sequences are cut 80/20 into ``input`` / ``targets`` (the ComiRec
protocol); ``graphs/item_cooc`` holds ``S_ij = co(i, j) / sum_j co(i, j)`` over adjacent items
of the training sequences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.data.schema import EVAL_ROWS, GRAPH, SEQUENCES, Manifest, TableInfo, schema_to_json


def write_seq_bundle(
    path: Path,
    *,
    users: int = 60,
    items: int = 48,
    clusters: int = 4,
    length: tuple[int, int] = (8, 16),
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    cluster_items = [np.flatnonzero(np.arange(items) % clusters == c) for c in range(clusters)]
    seqs = []
    for _ in range(users):
        favs = rng.choice(clusters, size=2, replace=False)
        n = int(rng.integers(length[0], length[1] + 1))
        seq, c = [], 0
        while len(seq) < n:
            run = int(rng.integers(1, 4))
            seq.extend(rng.choice(cluster_items[favs[c % 2]], size=run).tolist())
            c += 1
        seqs.append(seq[:n])
    order = rng.permutation(users)
    n_train, n_valid = int(0.8 * users), int(0.1 * users)
    parts = {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }
    train_users = np.sort(parts["train"])
    seq_t = pa.table(
        {
            "user": train_users,
            "items": [seqs[u] for u in train_users],
            "ts": [list(range(len(seqs[u]))) for u in train_users],
        },
        schema=SEQUENCES,
    )
    _write(path / "sequences" / "part-00000.parquet", seq_t)
    tables = {"sequences": TableInfo("sequences", seq_t.num_rows, schema_to_json(SEQUENCES))}
    for split in ("valid", "test"):
        recs = {"user": [], "input": [], "input_ts": [], "targets": [], "candidates": []}
        for u in np.sort(parts[split]):
            cut = int(0.8 * len(seqs[u]))
            recs["user"].append(int(u))
            recs["input"].append(seqs[u][:cut])
            recs["input_ts"].append(list(range(cut)))
            recs["targets"].append(seqs[u][cut:])
            recs["candidates"].append([])
        _write(
            path / "eval" / "user_holdout" / f"split={split}" / "part-00000.parquet",
            pa.table(recs, schema=EVAL_ROWS),
        )
    tables["eval/user_holdout"] = TableInfo(
        "eval/user_holdout", 2 * n_valid, schema_to_json(EVAL_ROWS), "split"
    )
    co = np.zeros((items, items))
    for u in train_users:
        s = seqs[u]
        for a, b in zip(s[:-1], s[1:], strict=True):
            if a != b:
                co[a, b] += 1
                co[b, a] += 1
    src = np.flatnonzero(co.sum(1) > 0)
    dst = [np.flatnonzero(co[i]).tolist() for i in src]
    w = [(co[i][co[i] > 0] / co[i].sum()).astype(np.float32).tolist() for i in src]
    graph = pa.table({"src": src.astype(np.int64), "dst": dst, "w": w}, schema=GRAPH)
    _write(path / "graphs" / "item_cooc" / "part-00000000-99999999.parquet", graph)
    tables["graphs/item_cooc"] = TableInfo(
        "graphs/item_cooc", graph.num_rows, schema_to_json(GRAPH), "src_range"
    )
    Manifest(
        name=f"seq-tiny-{seed}",
        source="tests.unit.models.dismir.seq_bundle",
        counts={"users": users, "items": items, "groups": 0},
        behaviors=["click"],
        split={"protocol": "user_holdout", "ratios": [0.8, 0.1, 0.1], "target_share": 0.2},
        tables=tables,
    ).write(str(path))
    return path


def _write(p: Path, t: pa.Table) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, p)
