"""Prometheus metrics of the service, with ``prometheus_client`` (its registry, histogram and exposition): Triton's
names and labels where Triton has the metric (``nv_inference_request_success``, ``nv_inference_request_failure``,
``nv_inference_count``, ``nv_inference_exec_count``, ``nv_inference_request_duration_us``, labels ``model`` and
``version``), a latency histogram (p50/p95/p99 computable with ``histogram_quantile``), and pcl-edge's own:
requests by outcome, resident bytes, the active bundle. Label values are escaped by the library."""

from __future__ import annotations

import threading
import time
from collections import Counter

from .errors import RuntimeFailure

# seconds; fine below 10 ms (an edge model answers in 0.1-5 ms), coarse above
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, router, gauges: dict | None = None) -> None:
        from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: the device's scrape carries what Triton's does
        self.router = router
        self.gauges = dict(gauges or {})  # name -> (help, callable returning a float or None): power, temperature
        self._lock = threading.Lock()
        self._success: Counter = Counter()  # (model, version) -> requests
        self._failure: Counter = Counter()  # (model, version, reason) -> requests
        self._items: Counter = Counter()  # (model, version) -> inferences (batch items)
        self._duration_us: Counter = Counter()  # (model, version) -> microseconds, successful requests
        self._outcomes: Counter = Counter()  # (task label, ok | client_error | server_error)
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("pcl_edge_request_duration_seconds", "Inference request latency, end to end in the "
                                 "service (successful requests)", ["model", "version"], buckets=BUCKETS,
                                 registry=self.registry)
        self.registry.register(_Collector(self))

    def label(self, model) -> str:
        """The task's name, or "unknown": never the raw path (no unbounded label values)."""
        try:
            return self.router.resolve(model)["name"]
        except RuntimeFailure:
            return "unknown"

    def version_of(self, label: str) -> str:
        try:
            return str(self.router.version.bundle_version) if label != "unknown" else ""
        except RuntimeFailure:
            return ""

    def success(self, model: str, version: str, items: int, ns: int) -> None:
        with self._lock:
            self._success[(model, version)] += 1
            self._items[(model, version)] += items
            self._duration_us[(model, version)] += ns // 1000
            self._outcomes[(model, "ok")] += 1
        self.latency.labels(model, version).observe(ns / 1e9)

    def failure(self, model: str, status: int, ns: int) -> None:
        reason = "REJECTED" if status < 500 else "BACKEND" if status == 500 else "OTHER"
        with self._lock:
            self._failure[(model, self.version_of(model), reason)] += 1
            self._outcomes[(model, "client_error" if status < 500 else "server_error")] += 1

    def count_unparsed(self, model, status: int) -> None:
        """A request refused before the core saw it (too large, too slow, not parseable)."""
        self.failure(self.label(model), status, 0)

    def exposition(self, started: float) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self._started = started
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Collector:
    """Triton's counters under Triton's exact names, and the gauges read at scrape time. Triton writes
    ``nv_inference_request_success`` as a counter without the ``_total`` suffix; prometheus_client (following
    OpenMetrics) cannot write a counter without it, so these are written untyped: the names and labels are Triton's,
    ``rate()`` works the same. pcl-edge's own counters are proper counters (``_total``)."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import Metric

        m = self.m
        with m._lock:
            success, failure, items = dict(m._success), dict(m._failure), dict(m._items)
            duration, outcomes = dict(m._duration_us), dict(m._outcomes)

        def family(name, doc, kind, rows, labels):
            base = name.removesuffix("_total") if kind == "counter" else name
            fam = Metric(base, doc, kind)
            for key, value in sorted(rows.items()):
                fam.add_sample(name, dict(zip(labels, key)), float(value))
            return fam

        mv = ("model", "version")
        yield family("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
                     "unknown", success, mv)
        yield family("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
                     "unknown", failure, (*mv, "reason"))
        yield family("nv_inference_count", "Number of inferences performed (batch items)", "unknown", items, mv)
        yield family("nv_inference_exec_count", "Number of model executions performed", "unknown", success, mv)
        yield family("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
                     "unknown", duration, mv)
        yield family("pcl_edge_requests_total", "Inference requests per task and outcome (ok, client_error: 4xx "
                     "including unparseable bodies, server_error: 5xx)", "counter", outcomes, ("task", "outcome"))
        errors: Counter = Counter()
        for (task, outcome), n in outcomes.items():
            errors[(task,)] += n if outcome != "ok" else 0
        yield family("pcl_edge_errors_total", "Failed inference requests per task (every 4xx and 5xx)", "counter",
                     errors, ("task",))
        try:
            version = m.router.version
        except RuntimeFailure:
            return
        seconds = {(t["name"],): m.router.stats[t["id"]].total_ns / 1e9 for t in m.router.tasks()}
        yield family("pcl_edge_inference_seconds_total", "Time spent in inference per task", "counter", seconds,
                     ("task",))
        yield family("pcl_edge_loaded_bytes", "Memory held by sessions (measured at load): the active version's, and "
                     "those of earlier versions or evicted ones that a request still uses", "gauge",
                     {(): m.router.resident_bytes()}, ())
        yield family("pcl_edge_bundle_version", "The active bundle's version", "gauge", {(): version.bundle_version},
                     ())
        yield family("pcl_edge_bundle_info", "The active bundle: its manifest digest identifies it", "gauge",
                     {(version.digest, str(version.bundle_version)): 1}, ("digest", "version"))
        yield family("pcl_edge_uptime_seconds", "Seconds since the service started", "gauge",
                     {(): time.time() - getattr(m, "_started", time.time())}, ())
        for name, (doc, read) in m.gauges.items():
            try:
                value = read()
            except Exception:  # noqa: BLE001 - a sensor that fails this scrape is left out, never fails the scrape
                value = None
            if value is not None:
                yield family(name, doc, "gauge", {(): value}, ())
