"""Build every reference data set of ../shared/data into OUT/<name> with the current code.

    python -m research.ingest_parity.build_refs OUT [name ...]

Used to keep the presets of the generic reader honest: build with the old readers into
data/ref_before, with the new ones into data/ref_after, then compare with
``python -m research.ingest_parity.compare data/ref_before data/ref_after``.
One Spark session builds all of them (local[2], 2 GB driver).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
# (bundle name, source, overrides): the default protocol of each, plus Gowalla's given split.
REFS: list[tuple[str, str, list[str]]] = [
    ("mafengwo", "mafengwo", []),
    ("jd_vcgae", "jd_vcgae", []),
    ("gowalla_1000u", "gowalla_1000u", []),
    ("gowalla_1000u_given", "gowalla_1000u", ["split=given"]),
    ("amazon_beauty", "amazon_beauty", []),
    ("ml-100k", "ml-100k", []),
]


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    want = set(argv[1:])
    from spark_jobs.build_bundle import build
    from spark_jobs.options import parse_overrides
    from spark_jobs.session import make_session

    spark = make_session("local[2]", driver_memory="2g")
    try:
        for name, source, ov in REFS:
            if want and name not in want:
                continue
            src = DATA / source
            if not src.is_dir():
                print(f"skip {name}: {src} absent", file=sys.stderr)
                continue
            build(spark, source, str(src), str(out / name), parse_overrides(ov + [f"name={name}"]))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(sys.argv[1:]))
