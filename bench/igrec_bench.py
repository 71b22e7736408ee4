"""IGRec memory measurements (the throughput figures come from bench/train_bench.py).

``synth-bundle``: synthetic group data with planted interests and groups of exactly
``--group-size`` members. ``memory``: a few training steps in this process and its peak RSS.
``profile``: where one process's training step goes (the real session, batches built inline so
the sampler is timed too): seconds per phase (batch = sampler + KJT, forward, backward,
optimizer), the frontier sizes and the torch.profiler's top operators. A profile, not a speed
figure: the profiler's overhead is in it.
(The tables of seed runs moved to ``python -m research.igrec_summarize``; the stand-in MaFengWo
bundle gave way to the Spark job's ``data/bundles/mafengwo``.)

    python bench/igrec_bench.py synth-bundle --out /tmp/synth-g500 --group-size 500
    python bench/igrec_bench.py memory --bundle /tmp/synth-g500 --member-cap 64 --steps 4
    python bench/igrec_bench.py profile --bundle data/bundles/scale_group --steps 3 \
        --json-out bench/results/igrec_profile.json [k=v overrides ...]
"""

from __future__ import annotations

import argparse
import json
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


def write_bundle(
    out: Path,
    name: str,
    source: str,
    sizes: tuple[int, int, int],
    ui: np.ndarray,
    gi: np.ndarray,
    mem: np.ndarray,
    seed: int,
) -> None:
    """Write a bundle (ids, interactions, groups) from unique pairs: ui [n, 2] (user, item),
    gi [m, 2] (group, item), mem [e, 2] (group, user); every user's and group's items split
    80/10/10 by :func:`split_per_query`. Written to ``out.tmp`` and renamed when complete."""
    nu, ni, ng = sizes
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
        name=name,
        source=source,
        counts=counts,
        behaviors=["buy"],
        split={
            "protocol": "random_per_user",
            "ratios": [0.8, 0.1, 0.1],
            "seed": seed,
            "groups": True,
        },
        tables=tables,
        created_by=f"bench/igrec_bench.py ({name})",
    ).write(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"wrote {out}: {counts}")


def synth_bundle(
    out: Path, users: int, items: int, groups: int, group_size: int, per_user: int, seed: int
) -> None:
    """Synthetic group data with planted interests: C = items // 100 clusters; a user takes 80%
    of its ``per_user`` items from its cluster; a group of exactly ``group_size`` members takes
    as many as it can (up to 70%) from the users of its cluster and 10 items from the cluster."""
    if group_size > users:
        raise ValueError(f"--group-size {group_size} exceeds --users {users}")
    rng = np.random.default_rng(seed)
    c = max(1, items // 100)
    u_cl, i_cl, g_cl = rng.integers(0, c, users), np.arange(items) % c, rng.integers(0, c, groups)
    by_cluster = [np.flatnonzero(i_cl == k) for k in range(c)]
    users_by = [np.flatnonzero(u_cl == k) for k in range(c)]
    n_own = rng.binomial(per_user, 0.8, users)
    ui_rows = []
    for u in range(users):
        own = rng.choice(by_cluster[u_cl[u]], min(n_own[u], len(by_cluster[u_cl[u]])), False)
        ui_rows.append(np.stack([np.full(len(own), u), own], 1))
        ui_rows.append(
            np.stack(
                [np.full(per_user - n_own[u], u), rng.integers(0, items, per_user - n_own[u])], 1
            )
        )
    ui = np.unique(np.concatenate(ui_rows).astype(np.int64), axis=0)
    mem_rows, gi_rows = [], []
    for g in range(groups):
        pool = users_by[g_cl[g]]
        own = rng.choice(pool, min(len(pool), int(0.7 * group_size)), replace=False)
        rest = np.setdiff1d(np.arange(users), own)
        other = rng.choice(rest, group_size - len(own), replace=False)
        mem_rows.append(np.stack([np.full(group_size, g), np.concatenate([own, other])], 1))
        its = rng.choice(by_cluster[g_cl[g]], min(10, len(by_cluster[g_cl[g]])), False)
        gi_rows.append(np.stack([np.full(len(its), g), its], 1))
    mem = np.unique(np.concatenate(mem_rows).astype(np.int64), axis=0)
    gi = np.unique(np.concatenate(gi_rows).astype(np.int64), axis=0)
    write_bundle(out, f"synth-groups-{group_size}", "synthetic", (users, items, groups), ui, gi,
                 mem, seed)  # fmt: skip


def memory_run(bundle: Path, member_cap: int, steps: int, batch_size: int, dim: int) -> dict:
    """Train ``steps`` IGRec steps in this process (unsharded) and report its peak RSS."""
    import resource
    import time

    import torch

    from distrec.models.igrec.config import IGRecConfig
    from distrec.models.igrec.data import IGRecData
    from distrec.models.igrec.graphs import load_graphs
    from distrec.models.igrec.model import IGRec

    torch.manual_seed(0)
    m = Manifest.load(str(bundle))
    g = load_graphs(str(bundle), m)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data = IGRecData(  # streams its pairs from the bundle's graphs/ tables (Spark bundles)
        str(bundle), target_behavior=0, batch_size=batch_size, eval_batch_size=1024,
        num_negatives=1, rank=0, world=1, seed=0,
    )  # fmt: skip
    cfg = IGRecConfig(dim=dim, member_cap=member_cap)
    model = IGRec(cfg, g, layers=2, l2=1e-4, device=torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    times = []
    it = data.train_batches(0)
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, _ = model(next(it))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    sizes = np.bincount(g.member_group, minlength=g.num_groups)
    return {
        "bundle": str(bundle),
        "groups": g.num_groups,
        "group_size_mean": float(sizes.mean()),
        "memberships": len(g.member_group),
        "member_cap": member_cap,
        "dim": dim,
        "batch_size": batch_size,
        "steps": steps,
        "step_s_median": float(np.median(times)),
        "rss_after_load_mb": rss0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def profile_run(bundle: str, steps: int, warmup: int, overrides: list[str]) -> dict:
    """Profile ``steps`` training steps of one process after ``warmup`` (see the module doc)."""
    import tempfile
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from distrec.config import load_config
    from distrec.engine.session import build_session

    over = [
        f"data.bundle={bundle}",
        "data.prefetch=0",  # batches built in this thread: the sampler shows up in the profile
        "data.num_workers=0",
        "metrics.enabled=false",
        f"run.dir={tempfile.mkdtemp(prefix='igrec-profile-')}",
        *overrides,
    ]
    cfg = load_config("igrec", str(REPO / "configs/igrec/synthetic_groups.yaml"), over)
    s = build_session("igrec", cfg)
    opt = s.optimizer
    assert opt is not None
    s.wrapped.train()
    it = iter(s.data.train_batches(0))
    phases: dict[str, list[float]] = {"batch": [], "forward": [], "backward": [], "optimizer": []}
    sizes: list[dict[str, int]] = []

    def one_step() -> None:
        t0 = time.perf_counter()
        with record_function("phase.batch"):
            batch = next(it)
        t1 = time.perf_counter()
        with record_function("phase.forward"):
            loss, _ = s.wrapped(batch)
        t2 = time.perf_counter()
        with record_function("phase.backward"):
            opt.zero_grad()
            loss.backward()
        t3 = time.perf_counter()
        with record_function("phase.optimizer"):
            opt.step()
        t4 = time.perf_counter()
        for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            phases[k].append(dt)
        n = batch.dense.get("lookup_n")
        sizes.append(
            dict(zip(("user", "item", "group"), (int(x) for x in n.tolist()), strict=False))
            if n is not None
            else {}
        )

    for _ in range(warmup):
        one_step()
    for v in phases.values():
        v.clear()
    sizes.clear()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            one_step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    return {
        "bundle": bundle,
        "overrides": overrides,
        "global_batch": cfg.data.batch_size,
        "steps": steps,
        "warmup": warmup,
        "phase_seconds_median": {k: float(np.median(v)) for k, v in phases.items()},
        "lookup_rows_per_step": sizes,
        "top_self_cpu_ms": {e.key: e.self_cpu_time_total / 1e3 / steps for e in top},
        "table": table,
        "torch_threads": torch.get_num_threads(),
        "load": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sb = sub.add_parser("synth-bundle")
    sb.add_argument("--out", type=Path, required=True)
    sb.add_argument("--users", type=int, default=20000)
    sb.add_argument("--items", type=int, default=2000)
    sb.add_argument("--groups", type=int, default=200)
    sb.add_argument("--group-size", type=int, default=500)
    sb.add_argument("--per-user", type=int, default=20)
    sb.add_argument("--seed", type=int, default=0)
    mr = sub.add_parser("memory", help="peak RSS of a few training steps (one process)")
    mr.add_argument("--bundle", type=Path, required=True)
    mr.add_argument("--member-cap", type=int, default=64)
    mr.add_argument("--steps", type=int, default=5)
    mr.add_argument("--batch-size", type=int, default=8192)
    mr.add_argument("--dim", type=int, default=64)
    mr.add_argument("--json-out", type=Path)
    pr = sub.add_parser("profile", help="where a training step goes (one process, profiler)")
    pr.add_argument("--bundle", required=True)
    pr.add_argument("--steps", type=int, default=3)
    pr.add_argument("--warmup", type=int, default=1)
    pr.add_argument("--json-out", type=Path)
    pr.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args(argv)
    if args.cmd == "synth-bundle":
        synth_bundle(
            args.out, args.users, args.items, args.groups, args.group_size, args.per_user,
            args.seed,
        )  # fmt: skip
    elif args.cmd == "profile":
        res = profile_run(args.bundle, args.steps, args.warmup, args.overrides)
        print(res.pop("table"))
        print(json.dumps(res, indent=1))
        if args.json_out:
            args.json_out.write_text(json.dumps(res, indent=1))
    else:
        res = memory_run(args.bundle, args.member_cap, args.steps, args.batch_size, args.dim)
        print(json.dumps(res, indent=1))
        if args.json_out:
            args.json_out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
