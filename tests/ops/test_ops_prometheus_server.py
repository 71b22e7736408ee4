"""A real Prometheus server scrapes a real 2-rank training run (torchrun, gloo).

Prometheus (Debian's package) runs on loopback with the project's scrape config
(k8s/base/monitoring/prometheus-scrape.yml, job ``distrec``: file-based discovery), pointed at
the two ranks' endpoints; the test then asks Prometheus's HTTP API for both ranks' series and
checks that the samples counter rose while the run was going.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.ops.support import K8S, REPO, PromServer, free_port, free_ports, stop_process

SCRAPE_CONFIG = K8S / "base" / "monitoring" / "prometheus-scrape.yml"


def project_scrape_config(targets_dir: Path, interval: str = "1s") -> dict:
    """The project's ``distrec`` job, its target files moved to ``targets_dir``.

    The Kubernetes job is dropped (no API server here) and the interval shortened so a run of a
    few seconds gets several scrapes; everything else is the shipped config.
    """
    cfg = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "distrec"]
    job["file_sd_configs"][0]["files"] = [str(targets_dir / "*.json")]
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    job["scrape_interval"] = interval
    cfg["global"]["scrape_interval"] = interval
    cfg["scrape_configs"] = [job]
    return cfg


def series_by_rank(prom: PromServer, expr: str) -> dict[str, list[float]]:
    """rank -> sample values of a range-vector query, oldest first."""
    out: dict[str, list[float]] = {}
    for r in prom.api("query", query=expr)["result"]:
        out[r["metric"]["rank"]] = [float(v) for _, v in r["values"]]
    return out


def test_prometheus_scrapes_both_ranks_of_a_training_run(start_prometheus, tmp_path: Path) -> None:
    pytest.importorskip("distrec.train", reason="the training entry point is not there yet")
    from tests.helpers.bundles import write_tiny_bundle

    bundle = write_tiny_bundle(tmp_path / "bundle")
    base = free_ports(2)  # local rank r listens on base + r
    master = free_port()
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "run.json").write_text(
        json.dumps(
            [
                {
                    "targets": [f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"],
                    "labels": {"training_job": "ops-test"},
                }
            ]
        )
    )
    prom = start_prometheus(project_scrape_config(targets))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node=2", f"--master-port={master}",
        "-m", "distrec.train", "mf",
        "--config", str(REPO / "configs" / "tiny" / "mf.yaml"),
        f"data.bundle={bundle}", f"run.dir={tmp_path / 'run'}",
        "metrics.enabled=true", f"metrics.port={base}",
        # long enough for several 1 s scrapes while it runs (no early stop)
        "train.epochs=40", "train.patience=1000",
    ]  # fmt: skip
    log = (tmp_path / "train.log").open("wb")
    train = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Both ranks become healthy scrape targets while the run is going.
        deadline = time.monotonic() + 240
        up: dict[str, str] = {}
        while time.monotonic() < deadline and train.poll() is None:
            active = prom.api("targets")["activeTargets"]
            up = {t["labels"]["instance"]: t["health"] for t in active}
            seen = prom.query('count by (rank) (distrec_samples_total{job="distrec"})')
            if len(seen) == 2 and set(up.values()) == {"up"}:
                break
            time.sleep(0.5)
        else:
            pytest.fail(
                f"both ranks never scraped while training ran; targets: {up}\n{_tail(tmp_path)}"
            )
        rc = train.wait(timeout=300)
        assert rc == 0, _tail(tmp_path)
    finally:
        stop_process(train)
        log.close()

    time.sleep(1.5)  # one more scrape interval: let the last samples land in the TSDB
    samples = series_by_rank(prom, 'distrec_samples_total{job="distrec"}[10m]')
    assert set(samples) == {"0", "1"}
    for rank, values in samples.items():
        assert len(values) >= 2, f"rank {rank}: only {len(values)} scrape(s)"
        assert all(b >= a for a, b in zip(values, values[1:])), f"rank {rank} counter went down"
        assert values[-1] > values[0], f"rank {rank}: samples counter never rose: {values}"
    # The other families the trainer reports are there for both ranks too, with their labels.
    for expr in (
        'distrec_steps_total{job="distrec"}',
        'distrec_loss{job="distrec"}',
        'distrec_step_seconds_count{job="distrec"}',
        'distrec_embedding_lookups_total{job="distrec"}',
    ):
        ranks = {r["metric"]["rank"] for r in prom.query(f"last_over_time({expr}[10m])")}
        assert ranks == {"0", "1"}, f"{expr}: ranks {ranks}"
    evals = prom.query('last_over_time(distrec_eval_metric{job="distrec", split="valid"}[10m])')
    assert evals and all(r["metric"]["model"] == "mf" for r in evals)
    assert all(r["metric"]["training_job"] == "ops-test" for r in evals)  # target labels apply


def _tail(tmp_path: Path) -> str:
    p = tmp_path / "train.log"
    return p.read_text(errors="replace")[-4000:] if p.exists() else ""
