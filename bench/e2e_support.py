"""Plumbing for ``bench/e2e_scale.py``: timed stages with per-rank peak RSS, a Prometheus server.

* :func:`run_stage` starts one command (its own session), samples the RSS of every process below
  it from /proc every ``poll_s`` and returns wall time, the peak RSS per rank (a process's rank is
  the ``RANK`` in its environment; a process without one, such as the Spark JVM or torchrun's
  launcher, counts as ``-1``) and the peak of the sum over all of them (what the box must hold).
* :class:`Prometheus` runs the Debian ``prometheus`` binary on loopback with the project's
  ``distrec`` scrape job (k8s/base/monitoring/prometheus-scrape.yml, file discovery pointed at a
  temporary directory) and answers range queries.

Torch-free; Linux only (/proc).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it, from ``/proc/<pid>/task/*/children`` (Linux): a
    walk of the tree only, not a scan of every process on the box at each poll."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process exited between its parent's listing and now
        out.append(p)
        for t in tasks:
            try:  # a thread that ends during the walk takes only its own children file with it
                todo.extend(int(k) for k in (t / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
    return out


def _rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _rank(pid: int, cache: dict[int, int]) -> int:
    """``RANK`` from the process's environment, -1 without one (torchrun's launcher, the JVM).
    Only a found rank is cached: a process seen between fork and exec has its parent's
    environment and gets its own RANK at exec. Forked data workers inherit their rank's."""
    if pid in cache:
        return cache[pid]
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        vals = [e[5:] for e in env if e.startswith(b"RANK=")]
        if vals:
            cache[pid] = int(vals[0])
            return cache[pid]
    except (OSError, ValueError):
        pass
    return -1


@dataclass
class StageResult:
    wall_s: float
    rc: int
    peak_rss_mb_by_rank: dict[int, float] = field(default_factory=dict)
    peak_rss_mb_total: float = 0.0
    log: str = ""

    def per_rank(self) -> list[float]:
        """Peak RSS of each rank (rank processes and their data workers), rank order."""
        return [round(self.peak_rss_mb_by_rank[r], 1) for r in sorted(self.peak_rss_mb_by_rank)]


def rank_process(launcher: int, rank: int) -> int | None:
    """The pid of rank ``rank``'s own process: the child of torchrun's ``launcher`` whose
    ``RANK`` is ``rank`` (its forked data workers, one level further down, are not it)."""
    try:
        kids = [int(k) for t in Path(f"/proc/{launcher}/task").iterdir()
                for k in (t / "children").read_text().split()]  # fmt: skip
    except (FileNotFoundError, ProcessLookupError):
        return None
    cache: dict[int, int] = {}
    return next((k for k in kids if _rank(k, cache) == rank), None)


def _kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every descendant (ranks run in their own sessions)."""
    for pid in [*descendants(root), root]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def install_sigterm_exit() -> None:
    """Turn SIGTERM (``timeout``, a scheduler) into SystemExit, so run_stage's cleanup kills the
    stage's process tree: its children run in a new session and would outlive the bench."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def run_stage(
    cmd: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    poll_s: float = 0.5,
    on_poll: Callable[[subprocess.Popen, float], bool] | None = None,
) -> StageResult:
    """Run ``cmd`` to completion (or until ``on_poll(proc, elapsed)`` returns True, which kills
    the whole process tree with SIGKILL), sampling RSS. Raises nothing on failure: ``rc`` says."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak: dict[int, float] = {}
    ranks: dict[int, int] = {}  # pid -> rank, read once per process
    total = 0.0
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        killed = False
        try:
            while p.poll() is None:
                now: dict[int, float] = {}
                pids = descendants(p.pid)
                for pid in pids:
                    r = _rank(pid, ranks)
                    now[r] = now.get(r, 0.0) + _rss_mb(pid)
                for r, v in now.items():
                    peak[r] = max(peak.get(r, 0.0), v)
                total = max(total, sum(now.values()))
                if on_poll is not None and not killed and on_poll(p, time.perf_counter() - t0):
                    _kill_tree(p.pid)
                    killed = True
                time.sleep(poll_s)
        except BaseException:  # interrupted (SIGTERM via install_sigterm_exit, ^C): no orphans
            _kill_tree(p.pid)
            raise
        rc = p.wait()
    wall = time.perf_counter() - t0
    if len(peak) > 1:  # ranks present: the launcher is not a rank
        peak.pop(-1, None)
    return StageResult(round(wall, 2), rc, peak, round(total, 1), str(log))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (rank r listens on base + r)."""
    for _ in range(100):
        base = free_port()
        ok = True
        for port in range(base + 1, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


class Prometheus:
    """A Prometheus server scraping ``distrec`` targets every ``interval`` seconds.

    Example::

        with Prometheus(work / "prom") as prom:
            prom.target("cigf", [9401, 9402])
            ...  # train
            prom.range('distrec_samples_total{run="cigf"}', t0, t1)
    """

    def __init__(self, work: Path, interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not installed: run scripts/ci_deps.sh as root")
        self.work = work
        self.targets = work / "targets"
        self.targets.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load((REPO / "k8s/base/monitoring/prometheus-scrape.yml").read_text())
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "distrec"]
        job["file_sd_configs"][0]["files"] = [str(self.targets / "*.json")]
        job["file_sd_configs"][0]["refresh_interval"] = "1s"
        job["scrape_interval"] = interval
        cfg["global"]["scrape_interval"] = interval
        cfg["scrape_configs"] = [job]
        (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("prometheus did not come up") from None
                time.sleep(0.3)

    def target(self, run: str, ports: list[int]) -> None:
        """Scrape ``127.0.0.1:<port>`` for each port, labelled ``run=<run>``."""
        body = [{"targets": [f"127.0.0.1:{p}" for p in ports], "labels": {"run": run}}]
        tmp = self.targets / f".{run}.tmp"
        tmp.write_text(json.dumps(body))
        tmp.rename(self.targets / f"{run}.json")

    def api(self, path: str, **params: Any) -> Any:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=30) as r:
            body = json.loads(r.read())
        if body["status"] != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def coverage(self, expr: str, t0: float, t1: float, step: float = 1.0) -> dict[str, Any]:
        """Per rank: number of samples of ``expr`` in [t0, t1], the first/last sample times
        relative to t0 (s) and the first/last values, from a range query at ``step`` resolution
        (a counter whose first value is 0 was scraped before the rank's first step)."""
        data = self.api("query_range", query=expr, start=t0, end=t1 + step, step=step)
        out: dict[str, Any] = {}
        for r in data["result"]:
            ts = [float(t) for t, _ in r["values"]]
            out[r["metric"].get("rank", "?")] = {
                "samples": len(ts),
                "first_s": round(ts[0] - t0, 1),
                "last_s": round(ts[-1] - t0, 1),
                "first_value": float(r["values"][0][1]),
                "last_value": float(r["values"][-1][1]),
            }
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
