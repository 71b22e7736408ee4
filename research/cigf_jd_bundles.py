"""Bundles derived from a multi-behavior bundle for the CIGF comparison table (docs/results/cigf.md).

Two derivations, both written next to (never over) the source bundle:

* ``union SRC OUT``: behaviors ``[all, <target>]``, where ``all`` = the distinct train pairs of
  every behavior of SRC and the target keeps its own train pairs; valid/test copied (their
  behavior index remapped). LightGCN and MF train on one behavior, so "LightGCN on all behaviors"
  runs with ``model.behavior=all`` on this bundle. Graphs ``ui.all`` / ``iu.all`` carry
  ``1/sqrt(deg_u deg_i)`` over the union graph, as the Spark job writes per-behavior graphs.
* ``p2 SRC OUT [--lists-from B]``: SRC plus an ``eval/<protocol>`` table holding the CIGF-paper
  protocol-2 lists (one held-out target item per user + 99 items the user never bought), drawn
  by :class:`~distrec.models.cigf.data.CigfData` from ``B`` (default SRC; seed 0), so that every
  model (CIGF, LightGCN, MF) is scored on the same 1 + 99 lists with ``eval.protocol=sampled``.

``python -m research.cigf_jd_bundles union data/bundles/jd /tmp/jd_all``
``python -m research.cigf_jd_bundles p2 data/bundles/jd /tmp/jd_p2``
``python -m research.cigf_jd_bundles p2 /tmp/jd_all /tmp/jd_all_p2 --lists-from data/bundles/jd``

Ids are unchanged (same ``ids/`` tables), so runs on the derived bundles rank the same items.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.data.bundle import Bundle
from distrec.data.schema import EVAL_ROWS, GRAPH, INTERACTIONS, Manifest, TableInfo, schema_to_json


def _info(path: str, rows: int, schema: pa.Schema, partitioned_by: str | None = None) -> TableInfo:
    return TableInfo(
        path=path, rows=int(rows), schema=schema_to_json(schema), partitioned_by=partitioned_by
    )


def _write(path: Path, t: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)


def _write_graph(d: Path, src: np.ndarray, dst: np.ndarray, w: np.ndarray, n_src: int) -> int:
    """One row per source node (sorted dst), one file ``part-<lo>-<hi>.parquet``; -> #sources."""
    order = np.lexsort((dst, src))
    src, dst, w = src[order], dst[order], w[order]
    nodes, starts = np.unique(src, return_index=True)
    ends = np.append(starts[1:], src.size)
    t = pa.table(
        {
            "src": nodes,
            "dst": [dst[a:b].tolist() for a, b in zip(starts, ends, strict=True)],
            "w": [w[a:b].tolist() for a, b in zip(starts, ends, strict=True)],
        },
        schema=GRAPH,
    )
    _write(d / f"part-{0:012d}-{max(n_src - 1, 0):012d}.parquet", t)
    return int(nodes.size)


def _split_table(src: Path, split: str) -> pa.Table:
    files = sorted((src / "interactions" / f"split={split}").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f, schema=INTERACTIONS) for f in files])


def union(src: Path, out: Path) -> dict[str, int]:
    """Write the ``[all, target]`` bundle; returns its counts."""
    man = Manifest.load(str(src))
    m, n = man.num_users, man.num_items
    tgt = len(man.behaviors) - 1
    target = man.behaviors[tgt]
    out.mkdir(parents=True, exist_ok=False)
    shutil.copytree(src / "ids", out / "ids")
    tables = {k: v for k, v in man.tables.items() if k.startswith("ids/")}
    counts = {"users": m, "items": n}
    train = _split_table(src, "train")
    u, i = train["user"].to_numpy(), train["item"].to_numpy()
    b = train["behavior"].to_numpy()
    key = np.unique(u * n + i)
    per = {"all": (key // n, key % n), target: (u[b == tgt], i[b == tgt])}
    rows = 0
    for split in ("train", "valid", "test"):
        if split == "train":
            parts = [(per["all"], 0), (per[target], 1)]
        else:
            t = _split_table(src, split)
            sel = t["behavior"].to_numpy() == tgt
            parts = [((t["user"].to_numpy()[sel], t["item"].to_numpy()[sel]), 1)]
        us = np.concatenate([p[0][0] for p in parts])
        its = np.concatenate([p[0][1] for p in parts])
        bs = np.concatenate([np.full(p[0][0].size, p[1], np.int8) for p in parts])
        t = pa.table(
            {"user": us, "item": its, "behavior": bs, "ts": pa.nulls(us.size, pa.int64())},
            schema=INTERACTIONS,
        )
        _write(out / "interactions" / f"split={split}" / "part-0.parquet", t)
        counts[f"interactions.{split}"] = int(us.size)
        rows += us.size
    tables["interactions"] = _info("interactions", rows, INTERACTIONS, "split")
    for name, (pu, pi) in per.items():
        counts[f"behavior.{name}"] = int(pu.size)
        deg_u = np.bincount(pu, minlength=m).astype(np.float64)
        deg_i = np.bincount(pi, minlength=n).astype(np.float64)
        w = (1.0 / np.sqrt(deg_u[pu] * deg_i[pi])).astype(np.float32)
        for rel, s, d, ns in (("ui", pu, pi, m), ("iu", pi, pu, n)):
            k = _write_graph(out / "graphs" / f"{rel}.{name}", s, d, w, ns)
            tables[f"graphs/{rel}.{name}"] = _info(f"graphs/{rel}.{name}", k, GRAPH, "src_range")
    Manifest(
        name=f"{man.name}_all",
        source=str(src),
        counts=counts,
        behaviors=["all", target],
        split=dict(man.split),
        tables=tables,
        filters={"derived": f"all = distinct train pairs of {man.behaviors}"},
        created_by="research.cigf_jd_bundles union",
    ).write(str(out))
    return counts


def add_p2(src: Path, out: Path, lists_from: Path | None = None, seed: int = 0) -> int:
    """Copy ``src`` to ``out`` and add the protocol-2 lists; returns the number of list rows."""
    from distrec.models.cigf.data import CigfData

    shutil.copytree(src, out)
    d = CigfData(str(lists_from or src), 0, 1, batch_size=1024, candidates=True, seed=seed)
    man = Manifest.load(str(out))
    protocol = man.split.get("protocol", "given")
    rows = 0
    for split in ("valid", "test"):
        users, targets, cands = d._draw_candidates(split)
        t = pa.table(
            {
                "user": users.astype(np.int64),
                "input": [[] for _ in users],
                "input_ts": [[] for _ in users],
                "targets": targets,
                "candidates": cands,
            },
            schema=EVAL_ROWS,
        )
        _write(out / "eval" / protocol / f"split={split}" / "part-0.parquet", t)
        rows += len(users)
    man.tables[f"eval/{protocol}"] = _info(f"eval/{protocol}", rows, EVAL_ROWS, "split")
    man.write(str(out))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.cigf_jd_bundles", description=__doc__)
    p.add_argument("what", choices=["union", "p2"])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--lists-from", help="p2: draw the lists from this bundle (default: src)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    src, out = Path(a.src), Path(a.out)
    Bundle(str(src))  # validates the source manifest
    if a.what == "union":
        print(union(src, out))
    else:
        lists = Path(a.lists_from) if a.lists_from else None
        print({"rows": add_p2(src, out, lists, a.seed)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
