"""PrometheusMetrics against a live scrape endpoint and a real Pushgateway (no mocks)."""

from __future__ import annotations

import socket
import urllib.error

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distrec.config import MetricsConfig
from distrec.metrics.prometheus import (
    METRIC_NAMES,
    NullMetrics,
    PrometheusMetrics,
    make_metrics,
)
from tests.ops.support import free_port, free_ports, http_get


def exported_families(text: str) -> dict[str, str]:
    """``# TYPE`` lines of a text-format scrape: family name -> type."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name] = kind
    return out


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape keyed by (sample name, labels)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def drive(m: PrometheusMetrics | NullMetrics, steps: int = 3) -> None:
    m.epoch(1)
    for i in range(steps):
        m.step(
            samples=64,
            step_seconds=0.02 * (i + 1),
            data_wait_seconds=0.001,
            losses={"bpr": 0.7 - 0.1 * i, "reg": 0.01},
            lookups={"user": 64, "item": 128},
        )
    m.eval(split="valid", task="user", values={"recall@10": 0.25, "ndcg@10": 0.125})
    m.checkpoint(seconds=1.5)


@pytest.fixture
def live() -> PrometheusMetrics:
    port = free_port()
    m = make_metrics(MetricsConfig(port=port - 1), rank=3, local_rank=1, model="mf")
    assert isinstance(m, PrometheusMetrics) and m.port == port  # base port + local_rank
    yield m
    m.close()


def test_every_declared_metric_is_exported(live: PrometheusMetrics) -> None:
    drive(live)
    text = http_get(f"http://127.0.0.1:{live.port}/metrics").decode()
    families = exported_families(text)
    missing = [n for n in METRIC_NAMES if n not in families]
    assert not missing, f"declared in METRIC_NAMES but not exported: {missing}"
    undeclared = [n for n in families if n.startswith("distrec_") and not n.endswith("_created")]
    assert sorted(undeclared) == sorted(METRIC_NAMES)
    assert families["distrec_samples_total"] == "counter"
    assert families["distrec_data_wait_seconds_total"] == "counter"
    assert families["distrec_data_wait_seconds"] == "histogram"
    assert families["distrec_step_seconds"] == "histogram"


def test_values_and_labels(live: PrometheusMetrics) -> None:
    drive(live, steps=3)
    got = samples(http_get(f"http://127.0.0.1:{live.port}/metrics").decode())
    base = {("rank", "3"), ("model", "mf")}

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(base | set(labels.items())))]

    assert value("distrec_samples_total") == 3 * 64
    assert value("distrec_steps_total") == 3
    assert value("distrec_loss", task="bpr") == pytest.approx(0.5)
    assert value("distrec_embedding_lookups_total", table="item") == 3 * 128
    assert value("distrec_step_seconds_count") == 3
    assert value("distrec_step_seconds_sum") == pytest.approx(0.12)
    assert value("distrec_data_wait_seconds_total") == pytest.approx(0.003)
    assert value("distrec_data_wait_seconds_count") == 3
    assert value("distrec_epoch") == 1
    assert value("distrec_eval_metric", split="valid", task="user", metric="ndcg@10") == 0.125
    assert value("distrec_checkpoints_total") == 1
    assert value("distrec_checkpoint_seconds_sum") == 1.5
    # Every distrec series carries rank and model.
    for (name, labels), _ in got.items():
        if name.startswith("distrec_"):
            assert base <= set(labels), (name, labels)


def test_text_format_even_when_openmetrics_is_asked(live: PrometheusMetrics) -> None:
    """Prometheus asks for OpenMetrics first; the endpoint must still answer in text 0.0.4."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{live.port}/metrics",
        headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"# EOF" not in r.read()


def test_close_stops_serving_and_is_idempotent() -> None:
    port = free_port()
    m = make_metrics(MetricsConfig(port=port), rank=0, local_rank=0, model="mf")
    http_get(f"http://127.0.0.1:{port}/metrics")
    m.close()
    m.close()
    with pytest.raises(urllib.error.URLError):
        http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_busy_port_is_a_clear_error() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(RuntimeError, match=rf"127\.0\.0\.1:{port}.*metrics\.port"):
            make_metrics(MetricsConfig(port=port), rank=0, local_rank=0, model="mf")


def test_disabled_gives_null_metrics() -> None:
    m = make_metrics(MetricsConfig(enabled=False), rank=0, local_rank=0, model="mf")
    assert isinstance(m, NullMetrics)
    drive(m)
    m.close()


def test_two_ranks_in_one_process_do_not_clash() -> None:
    """Private registries: two ranks' objects (as in a test or a notebook) coexist."""
    base = free_ports(2)
    a = make_metrics(MetricsConfig(port=base), rank=0, local_rank=0, model="mf")
    b = make_metrics(MetricsConfig(port=base), rank=1, local_rank=1, model="mf")
    try:
        drive(a, steps=1)
        drive(b, steps=2)
        ta = samples(http_get(f"http://127.0.0.1:{base}/metrics").decode())
        tb = samples(http_get(f"http://127.0.0.1:{base + 1}/metrics").decode())
        key = frozenset({("rank", "0"), ("model", "mf")})
        assert ta[("distrec_steps_total", key)] == 1
        assert tb[("distrec_steps_total", frozenset({("rank", "1"), ("model", "mf")}))] == 2
    finally:
        a.close()
        b.close()


def test_push_to_real_pushgateway_and_read_back(pushgateway: str) -> None:
    """Two ranks of a job that ends between scrapes push on close; both groups are readable."""
    for rank in (0, 1):
        m = make_metrics(
            MetricsConfig(port=0, pushgateway=pushgateway, job="distrec-test"),
            rank=rank,
            local_rank=rank,
            model="mf",
        )
        assert isinstance(m, PrometheusMetrics) and m.port is None  # push only
        drive(m, steps=rank + 1)
        m.close()
    got = samples(http_get(f"http://{pushgateway}/metrics").decode())
    for rank in (0, 1):
        labels = frozenset(
            {("job", "distrec-test"), ("rank", str(rank)), ("model", "mf"), ("instance", "")}
        )
        assert got[("distrec_steps_total", labels)] == rank + 1
        assert got[("distrec_samples_total", labels)] == 64 * (rank + 1)
        ev = labels | {("split", "valid"), ("task", "user"), ("metric", "recall@10")}
        assert got[("distrec_eval_metric", frozenset(ev))] == 0.25
        # the gateway records a successful push per group
        assert got[("push_failure_time_seconds", labels)] == 0
        assert got[("push_time_seconds", labels)] > 0


def test_failed_push_warns_but_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    dead = free_port()  # nobody listens there
    m = make_metrics(
        MetricsConfig(port=0, pushgateway=f"127.0.0.1:{dead}"), rank=0, local_rank=0, model="mf"
    )
    assert isinstance(m, PrometheusMetrics)
    assert m.push() is False
    m.close()
    assert "push to" in caplog.text
