"""IGRec helpers for measurements.

``mafengwo-bundle``: a stand-in MaFengWo bundle written with pyarrow, with the paper's protocol
(every user's and every group's interactions split at random 80/10/10), until the Spark job's
``data/bundles/mafengwo`` exists. The raw files are ../shared/data/mafengwo (train + test merged).

    python bench/igrec_bench.py mafengwo-bundle --out data/bundles/mafengwo-igrec --seed 0
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.data.schema import (
    GROUP_ITEMS,
    GROUP_MEMBERS,
    ID_MAP,
    INTERACTIONS,
    Manifest,
    TableInfo,
    schema_to_json,
)

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / ".." / "shared" / "data" / "mafengwo"


def _pairs(path: Path) -> np.ndarray:
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}: line {line_no}: expected 'id item', got {line!r}")
            rows.append((int(parts[0]), int(parts[1])))
    return np.unique(np.array(rows, dtype=np.int64), axis=0)


def split_per_query(pairs: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Random 80/10/10 split of every query's items. A query with n items gives
    max(1, round(0.1 n)) to test when n >= 2 and as many to valid when n >= 3 (small groups would
    otherwise have no held-out item at all)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    order = np.argsort(pairs[:, 0], kind="stable")
    pairs = pairs[order]
    bounds = np.flatnonzero(np.diff(pairs[:, 0])) + 1
    for chunk in np.split(pairs, bounds):
        chunk = chunk[rng.permutation(len(chunk))]
        n = len(chunk)
        k = max(1, round(0.1 * n))
        n_test = k if n >= 2 else 0
        n_valid = k if n >= 3 else 0
        out["test"].append(chunk[:n_test])
        out["valid"].append(chunk[n_test : n_test + n_valid])
        out["train"].append(chunk[n_test + n_valid :])
    return {s: np.concatenate(v) for s, v in out.items()}


def _write(root: Path, rel: str, table: pa.Table) -> None:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / "part-00000.parquet")


def mafengwo_bundle(out: Path, seed: int) -> None:
    ui = np.concatenate([_pairs(RAW / "userRatingTrain.txt"), _pairs(RAW / "userRatingTest.txt")])
    gi = np.concatenate([_pairs(RAW / "groupRatingTrain.txt"), _pairs(RAW / "groupRatingTest.txt")])
    members = []
    with open(RAW / "groupMember.txt") as f:
        for line_no, line in enumerate(f, 1):
            g, _, us = line.strip().partition(" ")
            if not us:
                raise ValueError(f"{RAW / 'groupMember.txt'}: line {line_no}: no members")
            members += [(int(g), int(u)) for u in us.split(",")]
    mem = np.unique(np.array(members, dtype=np.int64), axis=0)
    nu = int(max(ui[:, 0].max(), mem[:, 1].max())) + 1
    ni = int(max(ui[:, 1].max(), gi[:, 1].max())) + 1
    ng = int(max(gi[:, 0].max(), mem[:, 0].max())) + 1
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tables: dict[str, TableInfo] = {}
    for kind, n, prefix in (("users", nu, "u"), ("items", ni, "i"), ("groups", ng, "g")):
        t = pa.table({"raw_id": [f"{prefix}{i}" for i in range(n)], "idx": np.arange(n)}, ID_MAP)
        _write(tmp, f"ids/{kind}", t)
        tables[f"ids/{kind}"] = TableInfo(f"ids/{kind}", n, schema_to_json(ID_MAP))
    counts = {"users": nu, "items": ni, "groups": ng, "behavior.buy": len(ui)}
    u_split = split_per_query(ui, seed)
    g_split = split_per_query(gi, seed + 1)
    for s in ("train", "valid", "test"):
        p = u_split[s]
        t = pa.table(
            {
                "user": p[:, 0],
                "item": p[:, 1],
                "behavior": np.zeros(len(p), np.int8),
                "ts": pa.nulls(len(p), pa.int64()),
            },
            INTERACTIONS,
        )
        _write(tmp, f"interactions/split={s}", t)
        counts[f"interactions.{s}"] = len(p)
        gp = g_split[s]
        _write(
            tmp,
            f"groups/items/split={s}",
            pa.table({"group": gp[:, 0], "item": gp[:, 1]}, GROUP_ITEMS),
        )
    tables["interactions"] = TableInfo(
        "interactions", len(ui), schema_to_json(INTERACTIONS), "split"
    )
    tables["groups/items"] = TableInfo(
        "groups/items", len(gi), schema_to_json(GROUP_ITEMS), "split"
    )
    _write(tmp, "groups/members", pa.table({"group": mem[:, 0], "user": mem[:, 1]}, GROUP_MEMBERS))
    tables["groups/members"] = TableInfo("groups/members", len(mem), schema_to_json(GROUP_MEMBERS))
    Manifest(
        name="mafengwo",
        source=str(RAW.resolve()),
        counts=counts,
        behaviors=["buy"],
        split={
            "protocol": "random_per_user",
            "ratios": [0.8, 0.1, 0.1],
            "seed": seed,
            "groups": True,
        },
        tables=tables,
        created_by="bench/igrec_bench.py mafengwo-bundle",
    ).write(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"wrote {out}: {counts}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("mafengwo-bundle")
    b.add_argument("--out", type=Path, default=REPO / "data" / "bundles" / "mafengwo-igrec")
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "mafengwo-bundle":
        mafengwo_bundle(args.out, args.seed)


if __name__ == "__main__":
    main()
