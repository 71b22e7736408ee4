"""CIGF training throughput at 1 and 2 ranks, full and sampled graph modes, synthetic data.

    python bench/cigf_bench.py --users 100000 --items 20000 --steps 20 --warmup 3

Writes a synthetic 4-behavior bundle (view, cart, fav, buy: a purchase funnel, every user with
``--per-user`` buys and more upper-funnel events; ``tests/helpers/bundles.write_tiny_bundle``),
then runs ``bench/train_bench.py`` (the real engine under torchrun, gloo) for each mode and
moves its JSON to ``bench/results/cigf_<mode>_<R>r.json`` with the bundle's size added.
``--writer fast`` writes the bundle with ``bench/cigf_synth.py`` instead (vectorised, same
schema and funnel shape; the only practical writer at 10^6 users):

    python bench/cigf_bench.py --writer fast --users 1000000 --items 50000 --per-user 3 \
        --steps 5 --warmup 1 --suffix _1m
Full mode propagates over the whole graph every step (its cost grows with the graph, not the
batch); sampled mode propagates over each batch's ``--fanout``-capped neighbourhood.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEHAVIORS = ("view", "cart", "fav", "buy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/cigf_bench.py", description=__doc__)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--per-user", type=int, default=5)
    p.add_argument("--modes", nargs="+", default=["full", "sampled"])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=2048, help="global batch (target pairs)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--fanout", default="10,5", help="sampled mode: neighbours per behavior per hop")
    p.add_argument("--port", type=int, default=29620)
    p.add_argument("--bundle", help="reuse this bundle instead of writing one")
    p.add_argument("--writer", choices=["tiny", "fast"], default="tiny", help="bundle writer")
    p.add_argument("--extra", type=int, default=1, help="--writer fast: upper-funnel extras")
    p.add_argument("--suffix", default="", help="result files cigf_<mode>_<R>r<suffix>.json")
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cigf_bench_") as tmp:
        bundle = Path(a.bundle) if a.bundle else Path(tmp) / "bundle"
        if not a.bundle and a.writer == "fast":
            sys.path.insert(0, str(REPO / "bench"))
            from cigf_synth import write_synth_bundle

            t0 = time.perf_counter()
            write_synth_bundle(
                bundle, users=a.users, items=a.items, per_user=a.per_user, extra=a.extra
            )
            print(f"bundle written in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        elif not a.bundle:
            from tests.helpers.bundles import write_tiny_bundle

            t0 = time.perf_counter()
            print(f"writing a {a.users} x {a.items} bundle with {BEHAVIORS}", file=sys.stderr)
            write_tiny_bundle(
                bundle,
                users=a.users,
                items=a.items,
                behaviors=BEHAVIORS,
                per_user=a.per_user,
                cooc=False,
                graph_parts=4,
            )
            print(f"bundle written in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        from distrec.data.bundle import Bundle

        counts = dict(Bundle(bundle).manifest.counts)
        for i, mode in enumerate(a.modes):
            res_dir = Path(tmp) / f"res_{mode}"
            fan = [int(f) for f in a.fanout.split(",")] if mode == "sampled" else []
            cmd = [
                sys.executable, str(REPO / "bench" / "train_bench.py"),
                "--model", "cigf", "--config", str(REPO / "configs" / "cigf" / "jd.yaml"),
                "--ranks", *map(str, a.ranks), "--steps", str(a.steps),
                "--warmup", str(a.warmup), "--port", str(a.port + 10 * i),
                "--out-dir", str(res_dir),
                f"data.bundle={bundle}", f"data.batch_size={a.batch}", f"graph.mode={mode}",
                f"graph.layers={a.layers}", f"graph.fanout=[{','.join(map(str, fan))}]",
                "model.behaviors=[]",
            ]  # fmt: skip
            print("+", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True, cwd=REPO)
            for r in a.ranks:
                src = res_dir / f"train_cigf_{r}r.json"
                rec = json.loads(src.read_text())
                rec.update(
                    mode=mode, bundle_counts=counts, behaviors=list(BEHAVIORS), writer=a.writer
                )
                rec["command"] = "python bench/cigf_bench.py " + " ".join(argv or sys.argv[1:])
                dst = out_dir / f"cigf_{mode}_{r}r{a.suffix}.json"
                dst.write_text(json.dumps(rec, indent=2) + "\n")
                print(f"wrote {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
