"""Prometheus metrics for training runs: one scrape endpoint per rank, optional Pushgateway push.

The trainer talks to a :class:`Metrics` object through five calls (``step``, ``epoch``, ``eval``,
``checkpoint``, ``close``); :func:`make_metrics` returns a :class:`PrometheusMetrics` or, when
``metrics.enabled`` is false, a :class:`NullMetrics` that does nothing.

Every series carries the labels ``rank`` and ``model``. Rank ``r`` serves ``/metrics`` on
``cfg.port + local_rank`` (``cfg.port <= 0`` serves nothing, for push-only jobs), so every rank on
a node has its own port and a PodMonitor can scrape them all. When ``cfg.pushgateway`` is set,
``close()`` pushes the final values under the grouping key ``{job, model, rank}`` so a job that
ends between two scrapes still leaves its numbers behind.

The endpoint always answers in the plain Prometheus text format (0.0.4), whatever the scraper's
``Accept`` header says: the agreed names include both a counter ``distrec_data_wait_seconds_total``
and a histogram ``distrec_data_wait_seconds``, which are distinct families in the text format but
would share the family name ``distrec_data_wait_seconds`` in OpenMetrics.

Example::

    m = make_metrics(cfg.metrics, rank=0, local_rank=0, model="mf")
    m.step(samples=2048, step_seconds=0.05, data_wait_seconds=0.001,
           losses={"bpr": 0.69}, lookups={"user": 2048, "item": 4096})
    m.eval(split="valid", task="main", values={"recall@20": 0.1})
    m.close()
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app, push_to_gateway
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from distrec.config import MetricsConfig

log = logging.getLogger(__name__)

# Every metric family distrec defines (names as in the text format; prometheus_client adds its
# own ``*_created`` gauges beside counters and histograms). The Grafana dashboard may only query
# these, and tests/ops checks that a live endpoint exports each of them.
METRIC_NAMES: tuple[str, ...] = (
    "distrec_samples_total",
    "distrec_steps_total",
    "distrec_loss",
    "distrec_step_seconds",
    "distrec_data_wait_seconds_total",
    "distrec_data_wait_seconds",
    "distrec_epoch",
    "distrec_eval_metric",
    "distrec_checkpoint_seconds",
    "distrec_checkpoints_total",
    "distrec_embedding_lookups_total",
)

# Step times span ~1 ms (tiny CPU runs) to minutes (huge graph batches).
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Waiting for data is usually ~0; the interesting part is the tail when the loader starves.
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)
CHECKPOINT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

_BASE_LABELS = ("rank", "model")


class Metrics:
    """The interface the trainer calls; this base class ignores everything (see NullMetrics)."""

    def step(
        self,
        *,
        samples: int,
        step_seconds: float,
        data_wait_seconds: float,
        losses: dict[str, float],
        lookups: dict[str, int],
    ) -> None:
        """Record one optimizer step of this rank.

        ``samples``: training samples this rank processed (its B); ``losses``: task -> loss
        value; ``lookups``: table name -> embedding ids looked up this step.
        """

    def epoch(self, epoch: int) -> None:
        """Record that ``epoch`` (0-based) has started."""

    def eval(self, *, split: str, task: str, values: dict[str, float]) -> None:
        """Record evaluation results, e.g. ``values={"recall@20": 0.1, "ndcg@20": 0.05}``."""

    def checkpoint(self, *, seconds: float) -> None:
        """Record one checkpoint write that took ``seconds``."""

    def close(self) -> None:
        """Stop serving (and push, when configured). Safe to call twice."""


class NullMetrics(Metrics):
    """Metrics switched off (``metrics.enabled=false``): every call is a no-op."""


class _CounterValue:
    """A labelled counter kept outside prometheus_client's Counter.

    Needed for ``distrec_data_wait_seconds_total``: a library Counter named
    ``distrec_data_wait_seconds`` would clash in the registry with the histogram of the same base
    name. This collector has no ``describe()``, so the registry does not check its names.
    """

    def __init__(self, name: str, doc: str, labels: dict[str, str]) -> None:
        self._name, self._doc, self._labels = name, doc, labels
        self._value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float) -> None:
        if amount < 0:
            raise ValueError(f"{self._name}: counters only go up, got {amount}")
        with self._lock:
            self._value += amount

    def collect(self) -> Iterable[Metric]:
        fam = CounterMetricFamily(self._name, self._doc, labels=list(self._labels))
        with self._lock:
            fam.add_metric(list(self._labels.values()), self._value)
        yield fam


class _SilentHandler(WSGIRequestHandler):
    """Scrapes every few seconds would flood the rank logs otherwise."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _text_format_only(app: Any) -> Any:
    """Wrap prometheus_client's WSGI app so it never negotiates OpenMetrics (see module doc)."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        environ = dict(environ)
        environ.pop("HTTP_ACCEPT", None)
        return app(environ, start_response)

    return wrapped


def serve_registry(
    registry: CollectorRegistry, addr: str, port: int
) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread.

    Raises ``RuntimeError`` naming the address when the port cannot be bound.
    """

    class _Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        allow_reuse_address = True

    try:
        httpd = make_server(
            addr, port, _text_format_only(make_wsgi_app(registry)), _Server, _SilentHandler
        )
    except OSError as e:
        raise RuntimeError(
            f"metrics: cannot listen on {addr}:{port} ({e.strerror or e}); set metrics.port to a "
            "free base port (rank r uses port + local_rank) or metrics.enabled=false"
        ) from e
    thread = threading.Thread(target=httpd.serve_forever, name=f"metrics:{port}", daemon=True)
    thread.start()
    return httpd, thread


class PrometheusMetrics(Metrics):
    """Metrics in a private registry, served over HTTP and/or pushed on close.

    A private registry (not prometheus_client's global one) lets several instances live in one
    process, e.g. in tests, and keeps process/GC collectors out of the pushed group.
    """

    def __init__(self, cfg: MetricsConfig, *, rank: int, local_rank: int, model: str) -> None:
        self.cfg = cfg
        self.rank, self.local_rank, self.model = rank, local_rank, model
        self.registry = CollectorRegistry()
        base = {"rank": str(rank), "model": model}
        self._base = base
        r = self.registry

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, _BASE_LABELS + extra, registry=r)

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, _BASE_LABELS + extra, registry=r)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, _BASE_LABELS, buckets=buckets, registry=r).labels(**base)

        self._samples = counter("distrec_samples", "Training samples processed").labels(**base)
        self._steps = counter("distrec_steps", "Optimizer steps taken").labels(**base)
        self._loss = gauge("distrec_loss", "Loss of the last step, per task", ("task",))
        self._step_s = hist("distrec_step_seconds", "Wall time of one step", STEP_BUCKETS)
        self._wait_total = _CounterValue(
            "distrec_data_wait_seconds", "Seconds the step loop waited for batches", base
        )
        r.register(self._wait_total)  # type: ignore[arg-type]
        self._wait_s = hist("distrec_data_wait_seconds", "Per-step wait for a batch", WAIT_BUCKETS)
        self._epoch = gauge("distrec_epoch", "Current epoch (0-based)").labels(**base)
        self._eval = gauge(
            "distrec_eval_metric", "Last evaluation result", ("split", "task", "metric")
        )
        self._ckpt_s = hist(
            "distrec_checkpoint_seconds", "Checkpoint write time", CHECKPOINT_BUCKETS
        )
        self._ckpts = counter("distrec_checkpoints", "Checkpoints written").labels(**base)
        self._lookups = counter(
            "distrec_embedding_lookups", "Embedding ids looked up, per table", ("table",)
        )
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        if cfg.port > 0:
            self.port: int | None = cfg.port + local_rank
            self._server, self._thread = serve_registry(self.registry, cfg.addr, self.port)
            log.info("rank %d: metrics on http://%s:%d/metrics", rank, cfg.addr, self.port)
        else:
            self.port = None

    def step(
        self,
        *,
        samples: int,
        step_seconds: float,
        data_wait_seconds: float,
        losses: dict[str, float],
        lookups: dict[str, int],
    ) -> None:
        self._samples.inc(samples)
        self._steps.inc()
        self._step_s.observe(step_seconds)
        # Clock jitter can give a tiny negative wait; a counter must never go down.
        wait = max(0.0, data_wait_seconds)
        self._wait_total.inc(wait)
        self._wait_s.observe(wait)
        for task, value in losses.items():
            self._loss.labels(**self._base, task=task).set(float(value))
        for table, n in lookups.items():
            self._lookups.labels(**self._base, table=table).inc(int(n))

    def epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def eval(self, *, split: str, task: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self._eval.labels(**self._base, split=split, task=task, metric=metric).set(value)

    def checkpoint(self, *, seconds: float) -> None:
        self._ckpt_s.observe(seconds)
        self._ckpts.inc()

    def push(self) -> bool:
        """Push the current values to ``cfg.pushgateway``; False (and a warning) on failure.

        The grouping key holds job, model and rank, so ranks do not overwrite each other. A
        failed push never raises: the run's results are already on disk by then.
        """
        if not self.cfg.pushgateway:
            return False
        try:
            push_to_gateway(
                self.cfg.pushgateway,
                job=self.cfg.job,
                registry=self.registry,
                grouping_key={"model": self.model, "rank": str(self.rank)},
                timeout=10,
            )
        except OSError as e:
            log.warning("rank %d: push to %s failed: %s", self.rank, self.cfg.pushgateway, e)
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.push()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def make_metrics(cfg: MetricsConfig, *, rank: int, local_rank: int, model: str) -> Metrics:
    """The trainer's metrics sink: Prometheus when ``cfg.enabled``, else :class:`NullMetrics`."""
    if not cfg.enabled:
        return NullMetrics()
    return PrometheusMetrics(cfg, rank=rank, local_rank=local_rank, model=model)
