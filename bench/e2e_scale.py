"""The whole pipeline at industrial scale on one box (issue #19): synthetic logs -> Spark bundle ->
2-rank training of CIGF, LightGCN and DisMIR (Prometheus scraping both ranks) -> sharded
evaluation -> top-K and embedding export -> a rank killed mid-epoch and ``--resume``.

    python bench/e2e_scale.py --rows 10000000 --steps 200
    python bench/e2e_scale.py --rows 100000000 --steps 200 --stages bundle train_cigf

Sizes from ``--rows`` R (raw multi-behavior events): R/10 users, R/100 items, 4 behaviors; the
sequence set has R/100 users and ``--seq-items`` (default R/10) items. Every stage is a fresh
process tree timed from outside, its RSS sampled from /proc every 0.5 s (per rank: the rank's
process and its data workers; ``peak_rss_gb_total``: the peak of the sum over every process of
all stages, JVM included). Training runs ``--steps`` optimizer steps (0 = one epoch) with
``--<model>-config`` (defaults in CONFIGS; ``configs/{lightgcn,cigf}/e2e_full.yaml`` are full mode over
owned partitions at global batch 2^17) and the overrides recorded in the JSON. Which to use: the
sampled defaults for 10^8 and for #19's linear-growth check (a sampled step does not grow with the
graph; a full-mode epoch grows ~100x from 10^7 to 10^8 and its tables do not fit this box at 10^7
users); e2e_full for speed at <= ~10^7 edges. A Prometheus server
scrapes both ranks (``prometheus_covers_run``: every series from before the first step to the last).
The resume check SIGKILLs rank 1 after the first mid-epoch checkpoint of a ``--resume-steps`` run at
``--resume-batch``, resumes it and compares it with the same run uninterrupted. Writes
``bench/results/e2e_scale_<rows>.json`` (below 10^7 rows, smoke runs: ``<work>/e2e_scale_<rows>_smoke.json``;
``--out`` overrides); work files under ``--work`` (git-ignored by default).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import (  # noqa: E402
    REPO,
    Prometheus,
    StageResult,
    free_port,
    free_ports,
    install_sigterm_exit,
    rank_process,
    run_stage,
)

PY = sys.executable
STAGES = (
    "synth",
    "bundle",
    "train_cigf",
    "train_lightgcn",
    "train_dismir",
    "eval",
    "export",
    "resume",
)
# each model's default config (--<model>-config picks another; its path and the overrides go into
# the stage's JSON entry)
CONFIGS = {
    "cigf": "configs/cigf/synthetic.yaml",
    "lightgcn": "configs/lightgcn/synth.yaml",
    "dismir": "configs/dismir/beauty.yaml",
}
SERIES = ("distrec_samples_total", "distrec_step_seconds_count", "distrec_data_wait_seconds_total")
SMOKE_BELOW = (
    10_000_000  # smaller --rows are smoke runs: their JSON goes to --work, not bench/results
)
EPOCH_RE = re.compile(r"epoch (\d+): (\d+) steps, loss ([\d.naninf-]+), (\d+) samples/s/rank")


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _uptime() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _record(res: StageResult, **extra: Any) -> dict[str, Any]:
    out = {"wall_s": res.wall_s, "peak_rss_mb_per_rank": res.per_rank(), "rc": res.rc}
    out.update({"peak_rss_mb_total": res.peak_rss_mb_total, "log": res.log, "load": _uptime()})
    out.update(extra)
    if res.rc != 0:
        tail = Path(res.log).read_text(errors="replace")[-2000:]
        print(f"stage failed (rc {res.rc}), log {res.log}:\n{tail}", file=sys.stderr)
    return out


def _torchrun(module: str, args: list[str], port: int) -> list[str]:
    return [
        PY, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
        f"--master-port={port}", "-m", module, *args,
    ]  # fmt: skip


def _train_stats(run_dir: Path, batch: int) -> dict[str, Any]:
    """Steps, global samples/s and data wait from rank 0's epoch lines (weighted by steps)."""
    log = (run_dir / "logs" / "rank0.log").read_text(errors="replace")
    steps, secs, wait = 0, 0.0, 0.0
    per_rank = batch // 2
    for m in EPOCH_RE.finditer(log):
        n, rate = int(m.group(2)), float(m.group(4))
        steps += n
        secs += n * per_rank / max(rate, 1e-9)
    waits = [float(w) for w in re.findall(r"data wait ([\d.]+)%", log)]
    if waits:
        wait = sum(waits) / len(waits)
    stats = run_dir / "data_stats" / "rank0.json"
    per_epoch = json.loads(stats.read_text()).get("steps") if stats.exists() else None
    metrics = run_dir / "metrics.json"
    out = {
        "steps_per_epoch": per_epoch,
        "steps": steps,
        "samples_per_s": round(steps * batch / secs, 1) if secs else None,
        "data_wait_pct": round(wait, 2),
    }
    if metrics.exists():
        m = json.loads(metrics.read_text())
        out["test"] = m.get("test")
        out["global_step"] = m.get("global_step")
    return out


class E2E:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.work = Path(args.work or REPO / "bench" / "results" / "tmp" / f"e2e-{args.rows}")
        self.work.mkdir(parents=True, exist_ok=True)
        self.users = max(1000, args.rows // 10)
        self.items = max(500, args.rows // 100)
        self.seq_users = max(500, args.rows // 100)
        self.seq_items = args.seq_items or max(1000, args.rows // 10)
        # a prebuilt bundle (--mb-bundle / --seq-bundle) is used as it is and not rebuilt
        self.mb_bundle = Path(args.mb_bundle) if args.mb_bundle else self.work / "bundle_mb"
        self.seq_bundle = Path(args.seq_bundle) if args.seq_bundle else self.work / "bundle_seq"
        self.out = Path(args.out or _default_out(args.rows, self.work))
        # stages run by separate invocations (--stages ...) accumulate in one JSON
        old = json.loads(self.out.read_text()) if self.out.exists() and not args.fresh else {}
        self.stages: dict[str, Any] = old.get("stages", {})
        self.commands: list[str] = old.get("commands", [])
        self.prom: Prometheus | None = None

    # ------------------------------------------------------------------ data
    def synth(self) -> None:
        rec: dict[str, Any] = {}
        for kind, users, items, per_user, out in (
            ("multibehavior", self.users, self.items, 5, self.work / "raw_mb"),
            ("sequence", self.seq_users, self.seq_items, 30, self.work / "raw_seq"),
        ):
            shutil.rmtree(out, ignore_errors=True)
            cmd = [PY, "-m", "distrec.synth", "--kind", kind, "--users", str(users), "--items",
                   str(items), "--interactions-per-user", str(per_user), "--out", str(out),
                   "--seed", "0", "--chunk-rows", "2000000", "--quiet"]  # fmt: skip
            res = run_stage(cmd, self.work / f"synth_{kind}.log", _env())
            rec[kind] = _record(res, users=users, items=items, bytes=_du(out), command=cmd)
        rec["rc"] = max((r["rc"] for r in rec.values()), key=abs)
        self.stages["synth"] = rec

    def bundle(self) -> None:
        # a part given prebuilt (--mb-bundle / --seq-bundle) keeps what an earlier invocation
        # measured for it: the two builds can run as two commands
        rec = dict(self.stages.get("bundle", {}).get("parts", {}))
        for name, raw, out, opts in (
            ("multibehavior", self.work / "raw_mb", self.mb_bundle, ["split=random_per_user"]),
            ("sequence", self.work / "raw_seq", self.seq_bundle, ["split=user_holdout"]),
        ):
            if getattr(self.a, f"{'mb' if name == 'multibehavior' else 'seq'}_bundle"):
                continue
            shutil.rmtree(out, ignore_errors=True)
            cmd = [PY, "-m", "spark_jobs.build_bundle", "--source", "synth", "--input", str(raw),
                   "--out", str(out), "--master", "local[2]", "--driver-memory",
                   self.a.driver_memory, *opts]  # fmt: skip
            res = run_stage(cmd, self.work / f"bundle_{name}.log", _env())
            man = json.loads((out / "_manifest.json").read_text()) if res.rc == 0 else {}
            rec[name] = _record(res, bytes_on_disk=_du(out) if out.exists() else 0,
                                counts=man.get("counts"), command=cmd)  # fmt: skip
        mb = rec.get("multibehavior", {})
        self.stages["bundle"] = {
            "wall_s": round(sum(r["wall_s"] for r in rec.values()), 2),
            "peak_rss_mb_per_rank": [max(r["peak_rss_mb_total"] for r in rec.values())],
            "samples_per_s": None,
            "rc": max((r["rc"] for r in rec.values()), key=abs, default=0),
            "bytes_on_disk": sum(r["bytes_on_disk"] for r in rec.values()),
            "train_interactions": (mb.get("counts") or {}).get("interactions.train"),
            "parts": rec,
        }

    # -------------------------------------------------------------- training
    def _overrides(self, model: str, run_dir: Path, port: int) -> list[str]:
        bundle = self.seq_bundle if model == "dismir" else self.mb_bundle
        ov = [f"data.bundle={bundle}", f"run.dir={run_dir}", "metrics.enabled=true",
              f"metrics.port={port}", "train.epochs=1", "train.eval_every=1000"]  # fmt: skip
        if self.a.steps:
            ov.append(f"train.max_steps={self.a.steps}")
        if self.a.eval_users:  # the final test evaluation on a sample of the test users
            ov.append(f"eval.max_users={self.a.eval_users}")
        return ov + list(getattr(self.a, f"{model}_override") or [])

    def config(self, model: str) -> str:
        return str(getattr(self.a, f"{model}_config") or CONFIGS[model])

    def train(
        self, model: str, extra: list[str] | None = None, name: str = "", keep: bool = False,
        start_step: int = 0,
    ) -> dict[str, Any]:  # fmt: skip
        """One 2-rank training stage scraped by Prometheus. ``keep``: the run directory is
        resumed, not cleared; ``start_step``: its global step at the resume (the new processes'
        counters start there at 0)."""
        name = name or f"train_{model}"
        run_dir = self.work / "runs" / name
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        base = free_ports(2)
        assert self.prom is not None
        self.prom.target(name, [base, base + 1])
        ov = self._overrides(model, run_dir, base) + (extra or [])
        cfg = self.config(model)
        cmd = _torchrun("distrec.train", [model, "--config", cfg, *ov], free_port())
        t0 = time.time()
        res = run_stage(cmd, self.work / f"{name}.log", _env())
        t1 = time.time()
        time.sleep(2.5)  # two more scrape intervals: the last samples land
        batch = int(_cfg_value(run_dir, "data", "batch_size") or 0)
        rec = _record(res, config=cfg, overrides=ov, command=cmd, run_dir=str(run_dir),
                      global_batch=batch)  # fmt: skip
        rec["samples_per_s"] = None
        if res.rc == 0:
            rec.update(_train_stats(run_dir, batch))
        prom = {s: self.prom.coverage(f'{s}{{run="{name}"}}', t0, t1) for s in SERIES}
        rec["prometheus"] = prom
        steps = rec.get("global_step")
        rec["prometheus_covers_run"] = _covers(prom, None if steps is None else steps - start_step)
        rec["train_wall_span_s"] = round(t1 - t0, 1)
        self.stages[name] = rec
        return rec

    # ------------------------------------------------------- eval and export
    def eval(self) -> None:
        run = self.work / "runs" / "train_lightgcn"
        ov = [f"eval.max_users={self.a.eval_users}"] if self.a.eval_users else []
        cmd = _torchrun("distrec.evaluate", ["--run-dir", str(run), "--split", "test", *ov],
                        free_port())  # fmt: skip
        res = run_stage(cmd, self.work / "eval.log", _env())
        metrics = None
        if res.rc == 0:
            text = Path(res.log).read_text()
            metrics = json.loads(text[text.rindex("{") : text.rindex("}") + 1])
        trained = json.loads((run / "metrics.json").read_text()).get("test") if (
            run / "metrics.json").exists() else None  # fmt: skip
        same = None if metrics is None or trained is None else all(
            metrics.get(k) == v for k, v in trained.items())  # fmt: skip
        self.stages["eval"] = _record(res, command=cmd, metrics=metrics, samples_per_s=None,
                                      eval_users=self.a.eval_users,
                                      same_as_training_test=same)  # fmt: skip

    def export(self) -> None:
        run = self.work / "runs" / "train_lightgcn"
        users = self.work / "sample_users.txt"
        raw = _raw_user_ids(self.mb_bundle, self.a.export_users)
        users.write_text("\n".join(raw) + "\n")
        topk = self.work / "export" / "topk.parquet"
        emb = self.work / "export" / "items"
        shutil.rmtree(self.work / "export", ignore_errors=True)
        cmds = [
            _torchrun("distrec.recommend", ["--run-dir", str(run), "--users", str(users), "--k",
                      "50", "--out", str(topk)], free_port()),
            _torchrun("distrec.export", ["--run-dir", str(run), "--what", "items", "--out",
                      str(emb)], free_port()),
        ]  # fmt: skip
        parts = [run_stage(c, self.work / f"export_{i}.log", _env()) for i, c in enumerate(cmds)]
        wall = sum(p.wall_s for p in parts)
        self.stages["export"] = {
            "wall_s": round(wall, 2),
            "peak_rss_mb_per_rank": [max(v) for v in zip(*(p.per_rank() for p in parts))],
            "samples_per_s": None,
            "rc": [p.rc for p in parts],
            "topk_users": len(raw),
            "bytes_on_disk": _du(self.work / "export"),
            "commands": cmds,
        }

    # ---------------------------------------------------------------- resume
    def resume(self) -> None:
        """A shorter LightGCN run (``--resume-steps`` S at global batch ``--resume-batch``, one
        epoch, a checkpoint every S/2 steps): rank 1 SIGKILLed once the first checkpoint is on
        disk (torchrun then stops rank 0), ``--resume`` of the same run directory, and the same
        run uninterrupted for reference. The kill must land mid-epoch, and the resumed ranks must
        build no batch before the saved data position (their data_stats say which they built)."""
        steps = self.a.resume_steps
        common = [f"train.max_steps={steps}", f"run.checkpoint_every={steps // 2}",
                  f"data.batch_size={self.a.resume_batch}"]  # fmt: skip
        ref = self.train("lightgcn", common, name="resume_reference")
        run_dir = self.work / "runs" / "resume_killed"
        shutil.rmtree(run_dir, ignore_errors=True)
        base = free_ports(2)
        ov = self._overrides("lightgcn", run_dir, base) + common
        cmd = _torchrun("distrec.train", ["lightgcn", "--config", self.config("lightgcn"), *ov],
                        free_port())  # fmt: skip
        latest = run_dir / "checkpoints" / "latest"
        kill = _RankKiller(latest, rank=1)
        killed = run_stage(cmd, self.work / "resume_kill.log", _env(), on_poll=kill)
        saved = (run_dir / "checkpoints" / latest.read_text().strip()) if latest.exists() else None
        meta = json.loads((saved / "meta.json").read_text()) if saved else {}
        position = meta.get("data")
        # what the killed processes left besides checkpoints: the resumed run's own must be read
        for stale in ("logs", "data_stats", "metrics.json"):
            if (run_dir / stale).exists():
                (run_dir / stale).rename(run_dir / f"killed_{stale}")
        at = meta.get("global_step", 0)
        resumed = self.train("lightgcn", [*common, "--resume"], name="resume_killed", keep=True,
                             start_step=int(at or 0))  # fmt: skip
        data_stats = {}
        for r in range(2):
            f = run_dir / "data_stats" / f"rank{r}.json"
            data_stats[r] = json.loads(f.read_text()) if f.exists() else None
        per_epoch = ref.get("steps_per_epoch")
        self.stages["resume"] = {
            "wall_s": round(killed.wall_s + resumed["wall_s"], 2),
            "peak_rss_mb_per_rank": resumed["peak_rss_mb_per_rank"],
            "samples_per_s": ref.get("samples_per_s"),
            "rc": resumed["rc"],
            "settings": common,
            "killed_rank": 1,
            "killed_after_s": kill.killed_at,
            "killed_stage_rc": killed.rc,
            "killed_stage_wall_s": killed.wall_s,
            "checkpoint_global_step": at,
            "mid_epoch": bool(
                position
                and int(position["epoch"]) == 0
                and 0 < int(position["step"]) < (per_epoch or 0)
            ),
            "reference": {k: ref.get(k) for k in ("global_step", "test", "steps", "rc")},
            "resumed": {k: resumed.get(k) for k in ("global_step", "test", "steps", "rc")},
            "same_step_count": _same(ref.get("global_step"), resumed.get("global_step")),
            "same_metrics": _same(ref.get("test"), resumed.get("test")),
            "killed_at_position": position,
            "rebuilt_earlier_batches": _rebuilt(data_stats, position),
            "data_stats": data_stats,
        }

    # ------------------------------------------------------------------ main
    def run(self) -> dict[str, Any]:
        t0 = time.time()
        self.commands.append("python bench/e2e_scale.py " + " ".join(sys.argv[1:]))
        with Prometheus(self.work / "prom") as prom:
            self.prom = prom
            for stage in self.a.stages:
                print(f"[e2e +{time.time() - t0:7.0f}s] {stage} (load {_uptime()})", flush=True)
                if stage.startswith("train_"):
                    self.train(stage.removeprefix("train_"))
                else:
                    getattr(self, stage)()
                self.save(t0)
        return self.save(t0)

    def save(self, t0: float) -> dict[str, Any]:
        totals = [
            v.get("peak_rss_mb_total", 0) if isinstance(v, dict) else 0
            for v in self.stages.values()
        ]
        parts = [*self.stages.get("bundle", {}).get("parts", {}).values(),
                 *self.stages.get("synth", {}).values()]  # fmt: skip
        totals += [v["peak_rss_mb_total"] for v in parts if isinstance(v, dict)]
        doc = {
            "rows": self.a.rows,
            "users": self.users,
            "items": self.items,
            "seq_users": self.seq_users,
            "seq_items": self.seq_items,
            "steps": self.a.steps,
            "stages": self.stages,
            "peak_rss_gb_total": round(max(totals, default=0) / 1024, 2),
            "bytes_on_disk": _du(self.work) if self.work.exists() else 0,
            "wall_s_total": round(time.time() - t0, 1),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} cpus, 2-core sandbox",
            "commands": self.commands,
        }
        out = self.out
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        tmp.replace(out)
        return doc


class _RankKiller:
    """``run_stage``'s ``on_poll`` for the resume check: SIGKILL one rank's process once
    ``marker`` exists, then let torchrun stop the others; the whole tree only if it is still up
    60 s later."""

    def __init__(self, marker: Path, rank: int) -> None:
        self.marker, self.rank = marker, rank
        self.killed_at: float | None = None

    def __call__(self, proc: Any, elapsed: float) -> bool:
        if self.killed_at is not None:
            return elapsed - self.killed_at > 60
        if self.marker.exists():
            pid = rank_process(proc.pid, self.rank)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.killed_at = round(elapsed, 2)
        return False


def _same(a: Any, b: Any) -> bool | None:
    return None if a is None or b is None else a == b


def _default_out(rows: int, work: Path) -> Path:
    if rows < SMOKE_BELOW:
        return work / f"e2e_scale_{rows}_smoke.json"
    return REPO / "bench" / "results" / f"e2e_scale_{rows}.json"


def _covers(prom: dict[str, Any], steps: int | None) -> bool | None:
    """Whether every series was scraped on both ranks from before the first step (value 0) to
    after the last one (the step counter at ``steps``, the steps these processes ran)."""
    if steps is None:
        return None
    for series, ranks in prom.items():
        if sorted(ranks) != ["0", "1"] or any(r["first_value"] != 0 for r in ranks.values()):
            return False
        if series == "distrec_step_seconds_count":
            if any(r["last_value"] != steps for r in ranks.values()):
                return False
    return True


def _rebuilt(stats: dict[int, Any], position: dict[str, Any] | None) -> bool | None:
    """Whether any rank of the resumed run built a batch before the saved data position."""
    if not position or any(v is None for v in stats.values()):
        return None
    start = (int(position["epoch"]), int(position["step"]))
    for v in stats.values():
        for epoch, (first, _last, _n) in v["built"].items():
            if (int(epoch), int(first)) < start:
                return True
    return False


def _cfg_value(run_dir: Path, section: str, key: str) -> Any:
    import yaml

    f = run_dir / "config.yaml"
    if not f.exists():
        return None
    return (yaml.safe_load(f.read_text()).get(section) or {}).get(key)


def _raw_user_ids(bundle: Path, n: int) -> list[str]:
    """The first ``n`` raw user ids of the bundle (its ids/users map), as strings."""
    from distrec.data.bundle import Bundle

    raw = Bundle(str(bundle)).raw_ids("users")
    step = max(1, len(raw) // max(n, 1))
    return [str(x) for x in raw[::step][:n]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="raw multi-behavior events")
    p.add_argument("--seq-items", type=int, default=0, help="items of the sequence set (R/10)")
    p.add_argument("--steps", type=int, default=0, help="training steps per model (0 = an epoch)")
    p.add_argument("--resume-steps", type=int, default=40, help="steps of the resume check")
    p.add_argument(
        "--resume-batch",
        type=int,
        default=8192,
        help="its global batch (one epoch must hold more than --resume-steps)",
    )
    p.add_argument("--eval-users", type=int, default=20_000, help="test users evaluated (0 = all)")
    p.add_argument("--export-users", type=int, default=10_000)
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--work", default="")
    p.add_argument("--mb-bundle", default="", help="use this multi-behavior bundle as it is")
    p.add_argument("--seq-bundle", default="", help="use this sequence bundle as it is")
    p.add_argument(
        "--out",
        default="",
        help=f"JSON (default bench/results/e2e_scale_<rows>.json; below {SMOKE_BELOW:.0e} "
        "rows <work>/e2e_scale_<rows>_smoke.json)",
    )
    p.add_argument("--fresh", action="store_true", help="drop the stages of an earlier JSON")
    for m, cfg in CONFIGS.items():
        p.add_argument(f"--{m}-config", default=cfg, help=f"{m}'s config (default {cfg})")
        p.add_argument(f"--{m}-override", nargs="*", default=[], help=f"extra {m} overrides")
    args = p.parse_args(argv)
    install_sigterm_exit()
    doc = E2E(args).run()
    print(json.dumps({k: v for k, v in doc.items() if k != "stages"}, indent=2))
    failed = [
        k
        for k, v in doc["stages"].items()
        if isinstance(v, dict) and v.get("rc") not in (0, [0, 0], None)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
