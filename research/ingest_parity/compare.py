"""Compare two builds of the same bundles table by table (content, not file layout).

    python -m research.ingest_parity.compare data/ref_before data/ref_after [name ...]

For each bundle: manifest counts, behaviors, split parameters and per-table row counts must
match, and every table must hold the same rows (sorted; graph rows compared with their
dst/w lists). Prints one line per bundle and exits 1 on any difference.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds


def _table(bundle: Path, name: str) -> list[tuple]:
    d = bundle / name
    files = [
        str(p)
        for p in d.rglob("*.parquet")
        if not any(x.startswith((".", "_")) for x in p.relative_to(d).parts)
    ]
    t = ds.dataset(
        files, format="parquet", partitioning="hive", partition_base_dir=str(d)
    ).to_table()
    for k, f in enumerate(t.schema):
        if pa.types.is_dictionary(f.type):
            t = t.set_column(k, f.name, t.column(k).cast(pa.string()))
    cols = sorted(t.column_names)
    rows = zip(*[t.column(c).to_pylist() for c in cols])
    return sorted(
        (tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in rows),
        key=repr,
    )


def compare(a: Path, b: Path) -> list[str]:
    """Differences between bundles ``a`` and ``b`` (empty when the content is the same)."""
    ma = json.loads((a / "_manifest.json").read_text())
    mb = json.loads((b / "_manifest.json").read_text())
    diffs = []
    for k in ("counts", "behaviors", "split", "name", "source"):
        if ma[k] != mb[k]:
            diffs.append(f"manifest {k}: {ma[k]} != {mb[k]}")
    fa = {k: v for k, v in ma["filters"].items() if k != "notes"}
    fb = {k: v for k, v in mb["filters"].items() if k != "notes"}
    if fa != fb:
        diffs.append(f"manifest filters: {fa} != {fb}")
    ta, tb = ma["tables"], mb["tables"]
    if sorted(ta) != sorted(tb):
        diffs.append(f"tables: {sorted(set(ta) ^ set(tb))} differ")
    for name in sorted(set(ta) & set(tb)):
        if ta[name]["rows"] != tb[name]["rows"]:
            diffs.append(f"{name}: rows {ta[name]['rows']} != {tb[name]['rows']}")
            continue
        ra, rb = _table(a, name), _table(b, name)
        if ra != rb:
            bad = (
                next(i for i, (x, y) in enumerate(zip(ra, rb)) if x != y)
                if len(ra) == len(rb)
                else -1
            )
            diffs.append(f"{name}: content differs (first differing sorted row {bad})")
    return diffs


def main(argv: list[str]) -> int:
    a, b = Path(argv[0]), Path(argv[1])
    names = argv[2:] or sorted(n for n in os.listdir(a) if (a / n / "_manifest.json").exists())
    bad = 0
    for n in names:
        if not (b / n / "_manifest.json").exists():
            print(f"{n}: missing in {b}")
            bad += 1
            continue
        d = compare(a / n, b / n)
        print(f"{n}: {'same' if not d else 'DIFFERENT: ' + '; '.join(d)}")
        bad += bool(d)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
