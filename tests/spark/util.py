"""Small inputs in the raw formats, and bundle readers for assertions (pyarrow only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds


def write_synth(
    out: Path,
    *,
    kind: str = "multibehavior",
    users: int = 40,
    items: int = 60,
    per_user: int = 12,
    seed: int = 0,
    groups: int = 0,
    chunk_rows: int = 200,
) -> Path:
    """Raw logs in the ``distrec.synth`` contract format (meta.json + events/part-*.csv)."""
    rng = np.random.default_rng(seed)
    behaviors = {"multibehavior": ["view", "cart", "buy"], "sequence": ["click"], "group": ["buy"]}[
        kind
    ]
    rows = []
    for u in range(users):
        n = int(rng.integers(max(1, per_user // 2), per_user * 2))
        its = rng.choice(items, size=min(n, items), replace=False)
        t0 = 1_600_000_000 + int(rng.integers(0, 10**6))
        for k, i in enumerate(its):
            b = behaviors[int(rng.integers(0, len(behaviors)))]
            rows.append(f"u{u},i{i},{b},{t0 + 60 * k}")
    (out / "events").mkdir(parents=True, exist_ok=True)
    for c in range(0, len(rows), chunk_rows):
        with open(out / "events" / f"part-{c // chunk_rows:05d}.csv", "w") as f:
            f.write("user_id,item_id,behavior,timestamp\n")
            f.write("\n".join(rows[c : c + chunk_rows]) + "\n")
    meta = {
        "kind": kind,
        "users": users,
        "items": items,
        "groups": groups,
        "behaviors": behaviors,
        "seed": seed,
    }
    if kind == "group":
        (out / "groups").mkdir(exist_ok=True)
        with open(out / "groups" / "members-00000.csv", "w") as f:
            f.write("group_id,user_id\n")
            for g in range(groups):
                for u in rng.choice(users, size=int(rng.integers(2, 6)), replace=False):
                    f.write(f"g{g},u{u}\n")
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def table(bundle: Path, name: str) -> pa.Table:
    """A bundle table with hive partition columns (``split``) decoded to plain strings."""
    t = ds.dataset(os.path.join(bundle, name), format="parquet", partitioning="hive").to_table()
    for k, f in enumerate(t.schema):
        if pa.types.is_dictionary(f.type):
            t = t.set_column(k, f.name, t.column(k).cast(pa.string()))
    return t


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "_manifest.json").read_text())


def graph_dict(bundle: Path, name: str) -> dict[tuple[int, int], float]:
    t = table(bundle, f"graphs/{name}").to_pylist()
    return {(r["src"], d): w for r in t for d, w in zip(r["dst"], r["w"])}
