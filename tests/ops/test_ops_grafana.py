"""The Grafana dashboard may only query metrics the trainer really exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from distrec.metrics.prometheus import METRIC_NAMES
from tests.ops.support import K8S

DASHBOARD = K8S / "base" / "monitoring" / "grafana-dashboard.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels a query may group or filter by: ours, Prometheus's `le`, and the target labels the
# scrape config / PodMonitor add.
KNOWN_LABELS = {"rank", "model", "task", "table", "split", "metric", "le", "training_job"}
KNOWN_LABELS |= {"job", "instance", "namespace", "pod"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return [p for p in out if p.get("type") != "row"]


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in panels(dash) for t in p["targets"]]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']!r}", q))
    return out


def metric_names(expr: str) -> set[str]:
    """The distrec_ metric families an expression reads (histogram series map to the family)."""
    names = set()
    for name in re.findall(r"\bdistrec_[a-z0-9_]+", expr):
        if name not in METRIC_NAMES:
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in METRIC_NAMES:
                    name = name[: -len(suffix)]
        names.add(name)
    return names


def test_dashboard_is_valid_grafana_json() -> None:
    dash = load()
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dash):
        assert p["targets"], f"panel {p['title']!r} has no query"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['title']!r} is off the grid"
        assert [t["refId"] for t in p["targets"]] == sorted({t["refId"] for t in p["targets"]})


@pytest.mark.parametrize("where,expr", queries(load()))
def test_every_query_reads_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: {expr!r} reads no distrec_ metric"
    unknown = names - set(METRIC_NAMES)
    assert not unknown, f"{where}: {sorted(unknown)} not in METRIC_NAMES"
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels = {x.strip() for x in group.split(",") if x.strip()}
        assert labels <= KNOWN_LABELS, f"{where}: groups by unknown labels {labels - KNOWN_LABELS}"
    for label in re.findall(r"([a-z_]+)\s*=~?\s*\"", expr):
        assert label in KNOWN_LABELS, f"{where}: filters on unknown label {label!r}"


def test_histograms_are_read_through_their_series() -> None:
    """``rate(distrec_step_seconds[..])`` would be empty: histograms only exist as _bucket etc."""
    histograms = {"distrec_step_seconds", "distrec_data_wait_seconds", "distrec_checkpoint_seconds"}
    for where, expr in queries(load()):
        for name in re.findall(r"\bdistrec_[a-z0-9_]+", expr):
            assert name not in histograms, f"{where}: reads histogram {name} without a suffix"


def test_dashboard_covers_the_issue_topics() -> None:
    """Throughput, step time quantiles, loss per task, data wait, eval metrics, checkpoints."""
    read = set().union(*(metric_names(e) for _, e in queries(load())))
    needed = {
        "distrec_samples_total",
        "distrec_step_seconds",
        "distrec_loss",
        "distrec_data_wait_seconds_total",
        "distrec_data_wait_seconds",
        "distrec_eval_metric",
        "distrec_checkpoints_total",
        "distrec_checkpoint_seconds",
    }
    assert needed <= read, f"no panel shows {sorted(needed - read)}"
    exprs = " ".join(e for _, e in queries(load()))
    assert "histogram_quantile(0.99, sum by (le" in exprs
