"""Bundle build time for synthetic logs of several sizes (``python bench/bundle_build.py``).

For each size: generate multibehavior logs with ``python -m distrec.synth`` (not timed),
then time ``python -m spark_jobs.build_bundle --source synth`` in a fresh process (fresh
JVM, ``local[2]``, driver memory 2g) and write ``bench/results/bundle_build_<n>.json``.
The interaction count is read back from the bundle's manifest, so the JSON states what was
actually processed.

    python bench/bundle_build.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "results" / "tmp"  # git-ignored


def _run(cmd: list[str], log: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    t = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t


def bench_one(n: int, per_user: int, keep: bool) -> dict:
    # distrec.synth adds cart/fav/buy events on top of ``per_user`` views: about 1.88 raw rows
    # per view (measured), so this many users gives about n raw rows.
    users = max(2, int(n / (per_user * 1.88)))
    items = max(1000, users // 5)
    raw = WORK / f"raw-{n}"
    out = WORK / f"bundle-{n}"
    if not (raw / "meta.json").exists():
        gen = [
            sys.executable,
            "-m",
            "distrec.synth",
            "--kind",
            "multibehavior",
            "--users",
            str(users),
            "--items",
            str(items),
            "--out",
            str(raw),
            "--interactions-per-user",
            str(per_user),
            "--chunk-rows",
            "1000000",
            "--quiet",
        ]
        print(f"generating {n} rows: {' '.join(gen)}", flush=True)
        _run(gen, WORK / f"gen-{n}.log")
    raw_rows = sum(sum(1 for _ in open(p)) - 1 for p in sorted((raw / "events").glob("*.csv")))
    cmd = [
        sys.executable,
        "-m",
        "spark_jobs.build_bundle",
        "--source",
        "synth",
        "--input",
        str(raw),
        "--out",
        str(out),
        "--driver-memory",
        "2g",
    ]
    print(f"building: {' '.join(cmd)}", flush=True)
    secs = _run(cmd, WORK / f"build-{n}.log")
    m = json.loads((out / "_manifest.json").read_text())
    inter = sum(v for k, v in m["counts"].items() if k.startswith("interactions."))
    stages = [ln.strip() for ln in open(WORK / f"build-{n}.log") if ln.startswith("[build_bundle")]
    res = {
        "benchmark": "bundle_build",
        "raw_rows": raw_rows,
        "interactions_out": inter,
        "users": m["counts"]["users"],
        "items": m["counts"]["items"],
        "wall_seconds": round(secs, 1),
        "rows_per_second": round(raw_rows / secs, 1),
        "stages": stages,
        "command": " ".join(cmd),
        "spark": "local[2], spark.driver.memory=2g, shuffle partitions 8",
        "machine": "2-core CPU sandbox, shared with other jobs (load average at start in "
        "load_avg_start)",
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--per-user", type=int, default=20, help="mean views per user (synth)")
    p.add_argument("--keep", action="store_true", help="keep the bundles")
    args = p.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        res = bench_one(n, args.per_user, args.keep)
        path = REPO / "bench" / "results" / f"bundle_build_{n}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps({k: res[k] for k in ("raw_rows", "wall_seconds", "rows_per_second")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
