"""Synthetic raw logs with planted structure: ``python -m distrec.synth --kind K --users N --items M
--out DIR [--seed S] [--interactions-per-user K] [--chunk-rows R]``.

Output (the same shape as real logs; read by spark_jobs' ``synth`` reader)::

    DIR/meta.json                      kind, users, items, groups, behaviors (target last), seed,
                                       interests and every planted parameter, row counts
    DIR/events/part-00000.csv ...      user_id,item_id,behavior,timestamp   (u17, i42, view, 1600000123)
    DIR/groups/members-00000.csv ...   group_id,user_id                     (--kind group)
    DIR/groups/events-00000.csv ...    group_id,item_id,timestamp           (--kind group)
    DIR/truth/{users,items,groups}-00000.csv  planted interests (for tests and analysis; not logs)

Users are generated in blocks and every block is appended to the current CSV part (a new part
every ``--chunk-rows`` rows), so memory is O(users + items + one block), not O(interactions).
Everything is written into a temporary sibling directory renamed to DIR at the end: a failed run
leaves nothing half written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from distrec.synth_model import FUNNEL, MAX_INTERESTS, Planted, World

log = logging.getLogger("distrec.synth")
KINDS = ("multibehavior", "group", "sequence")


class PartWriter:
    """Appends tables to ``<dir>/<prefix>-00000.csv``, starting a new part every ``chunk_rows``."""

    def __init__(self, d: Path, prefix: str, columns: list[str], chunk_rows: int) -> None:
        self.d, self.prefix, self.columns, self.chunk_rows = d, prefix, columns, chunk_rows
        self.d.mkdir(parents=True, exist_ok=True)
        self.part, self.rows_in_part, self.rows = -1, 0, 0
        self._f: Any = None

    def _open(self) -> None:
        self.close()
        self.part += 1
        self._f = open(self.d / f"{self.prefix}-{self.part:05d}.csv", "wb")  # noqa: SIM115
        self._f.write((",".join(self.columns) + "\n").encode())
        self.rows_in_part = 0

    def write(self, t: pa.Table) -> None:
        start = 0
        while start < t.num_rows:
            if self._f is None or self.rows_in_part >= self.chunk_rows:
                self._open()
            n = min(t.num_rows - start, self.chunk_rows - self.rows_in_part)
            opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
            pacsv.write_csv(t.slice(start, n), self._f, write_options=opts)
            self.rows_in_part += n
            self.rows += n
            start += n

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _ids(prefix: str, a: np.ndarray) -> pa.Array:
    """Raw string ids like ``u17`` for int array ``a``."""
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(pa.array(a), pa.string()), "")


def generate(
    kind: str,
    users: int,
    items: int,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    interactions_per_user: int = 20,
    chunk_rows: int = 1_000_000,
    groups: int | None = None,
    interests: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write synthetic logs of ``kind`` to ``out`` and return the meta dict (also meta.json).

    ``interactions_per_user`` is the mean number of primary events per user (views for
    multibehavior, clicks for sequence, buys for group); each user has at least 3.
    """
    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if users < 2 or items < 2:
        raise ValueError(f"--users and --items must be >= 2, got {users} and {items}")
    if chunk_rows < 1 or interactions_per_user < 1:
        raise ValueError("--chunk-rows and --interactions-per-user must be positive")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out")
    n_int = interests or int(np.clip(items // 40, 2, 64))
    planted = Planted(
        interests=n_int,
        stickiness=0.5 if kind == "sequence" else 0.0,
        drift=4.0,
    )
    behaviors = (
        list(FUNNEL) if kind == "multibehavior" else ["click"] if kind == "sequence" else ["buy"]
    )
    n_groups = (groups if groups is not None else max(2, users // 5)) if kind == "group" else 0
    rng = np.random.default_rng(seed)
    world = World(users, items, planted, rng)

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        counts = _write_all(
            kind, world, tmp, behaviors, n_groups, seed, interactions_per_user, chunk_rows, progress
        )
        meta = {
            "kind": kind,
            "users": users,
            "items": items,
            "groups": n_groups,
            "behaviors": behaviors,
            "seed": seed,
            "interests": n_int,
            "interactions_per_user": interactions_per_user,
            "chunk_rows": chunk_rows,
            "planted": planted.to_json(),
            "rows": counts,
            "files": {"events": "events/part-*.csv", "truth": "truth/"}
            | (
                {"members": "groups/members-*.csv", "group_events": "groups/events-*.csv"}
                if n_groups
                else {}
            ),
            "generator": "distrec.synth",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            out.rmdir()  # empty (checked above)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s rows to %s in %.1fs", counts, out, time.perf_counter() - t0)
    return meta


def _write_all(
    kind: str,
    world: World,
    d: Path,
    behaviors: list[str],
    n_groups: int,
    seed: int,
    per_user: int,
    chunk_rows: int,
    progress: bool,
) -> dict[str, int]:
    users = world.n_users
    expand = 1.6 if kind == "multibehavior" else 1.0
    block = int(np.clip(chunk_rows // max(1, int(per_user * expand)), 1, 100_000))
    ev = PartWriter(
        d / "events", "part", ["user_id", "item_id", "behavior", "timestamp"], chunk_rows
    )
    tu = PartWriter(
        d / "truth",
        "users",
        ["user_id"]
        + [f"interest{j}" for j in range(MAX_INTERESTS)]
        + [f"weight{j}" for j in range(MAX_INTERESTS)],
        max(chunk_rows, users),
    )
    names = pa.array(behaviors)
    bar = tqdm(
        total=users, unit="user", desc=f"synth {kind}", disable=not progress, file=sys.stderr
    )
    try:
        for lo in range(0, users, block):
            hi = min(users, lo + block)
            # one generator per block: the output depends on (seed, block), not on earlier blocks' draws
            brng = np.random.default_rng([seed, 1, lo])
            e = world.user_events(lo, hi, per_user, brng)
            if kind == "multibehavior":
                e = world.funnel(e, brng)
                beh = pc.take(names, pa.array(e["behavior"]))
            else:
                beh = pc.take(names, pa.array(np.zeros(len(e["user"]), dtype=np.int64)))
            ev.write(
                pa.table(
                    {
                        "user_id": _ids("u", e["user"]),
                        "item_id": _ids("i", e["item"]),
                        "behavior": beh,
                        "timestamp": e["ts"],
                    }
                )
            )
            cols = {"user_id": _ids("u", np.arange(lo, hi))}
            for j in range(MAX_INTERESTS):
                cols[f"interest{j}"] = pa.array(world.interests[lo:hi, j])
            for j in range(MAX_INTERESTS):
                cols[f"weight{j}"] = pa.array(np.round(world.weights[lo:hi, j], 4))
            tu.write(pa.table(cols))
            bar.update(hi - lo)
    finally:
        bar.close()
        ev.close()
        tu.close()
    ti = PartWriter(d / "truth", "items", ["item_id", "cluster"], max(chunk_rows, world.n_items))
    ti.write(
        pa.table({"item_id": _ids("i", np.arange(world.n_items)), "cluster": world.item_cluster})
    )
    ti.close()
    counts = {"events": ev.rows, "event_parts": ev.part + 1}
    if n_groups:
        counts |= _write_groups(world, d, n_groups, seed, per_user, chunk_rows)
    return counts


def _write_groups(
    world: World, d: Path, n_groups: int, seed: int, per_user: int, chunk_rows: int
) -> dict[str, int]:
    """Members share the group's cluster; group events are mostly that cluster's items."""
    rng = np.random.default_rng([seed, 2])
    g_cl, g, u = world.groups(n_groups, rng)
    mw = PartWriter(d / "groups", "members", ["group_id", "user_id"], chunk_rows)
    mw.write(pa.table({"group_id": _ids("g", g), "user_id": _ids("u", u)}))
    mw.close()
    tg = PartWriter(d / "truth", "groups", ["group_id", "cluster"], max(chunk_rows, n_groups))
    tg.write(pa.table({"group_id": _ids("g", np.arange(n_groups)), "cluster": g_cl}))
    tg.close()
    gw = PartWriter(d / "groups", "events", ["group_id", "item_id", "timestamp"], chunk_rows)
    p = world.p
    mean = max(3, per_user // 2)
    block = int(np.clip(chunk_rows // mean, 1, 100_000))
    for lo in range(0, n_groups, block):
        hi = min(n_groups, lo + block)
        brng = np.random.default_rng([seed, 3, lo])
        k = 3 + brng.poisson(mean - 3, hi - lo)
        gid = np.repeat(np.arange(lo, hi), k)
        items = world.draw_items(g_cl[gid], brng)
        noisy = brng.random(gid.shape[0]) < p.noise
        items[noisy] = world.draw_popular(int(noisy.sum()), brng)
        ts = np.repeat(brng.integers(p.time_start, p.time_start + p.time_span, hi - lo), k)
        ts = ts + brng.integers(0, 30 * 86400, gid.shape[0])
        gw.write(
            pa.table({"group_id": _ids("g", gid), "item_id": _ids("i", items), "timestamp": ts})
        )
    gw.close()
    return {"members": mw.rows, "group_events": gw.rows}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m distrec.synth", description=__doc__.split("\n")[0])
    ap.add_argument("--kind", required=True, choices=KINDS)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--interactions-per-user", type=int, default=20, help="mean primary events per user"
    )
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per CSV part")
    ap.add_argument(
        "--groups", type=int, default=None, help="--kind group: number of groups (users/5)"
    )
    ap.add_argument(
        "--interests", type=int, default=None, help="number of item clusters (items/40)"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s synth %(message)s")
    try:
        meta = generate(
            args.kind,
            args.users,
            args.items,
            args.out,
            seed=args.seed,
            interactions_per_user=args.interactions_per_user,
            chunk_rows=args.chunk_rows,
            groups=args.groups,
            interests=args.interests,
            progress=not args.quiet,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "rows": meta["rows"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
