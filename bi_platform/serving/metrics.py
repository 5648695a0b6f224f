"""Prometheus metrics of the serving API (prometheus-client).

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (no global state, so
tests can build many apps). With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR``
(an empty directory) *before* the workers import prometheus_client: values then live in
that directory and :meth:`ServingMetrics.render` merges every worker's
(:class:`~prometheus_client.multiprocess.MultiProcessCollector`).

The metric names below are what ``deploy/grafana/bi_serving_dashboard.json`` and
``deploy/prometheus/bi_serving_alerts.yml`` query. Query labels are catalog names only
(:func:`query_label`): a client's made-up name becomes ``"unknown"``, so labels stay few
and never echo client input.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from bi_platform.retail.queries import CATALOG

__all__ = [
    "LATENCY_BUCKETS",
    "METRIC_NAMES",
    "STATUS_CLASSES",
    "ServingMetrics",
    "multiprocess_mode",
    "query_label",
    "status_class",
]

NAMESPACE = "bi_serving"

#: Request latency buckets, 1 ms .. 5 s (2 s is the alert threshold).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0,
)  # fmt: skip
#: Pool wait buckets, 0.1 ms .. 5 s (the pool timeout's range).
POOL_WAIT_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

#: Family names (as exposed, without the _total/_bucket suffixes).
METRIC_NAMES = {
    "requests": f"{NAMESPACE}_requests",
    "responses": f"{NAMESPACE}_responses",
    "redis_breaker": f"{NAMESPACE}_redis_breaker_open",
    "latency": f"{NAMESPACE}_request_duration_seconds",
    "cache_hits": f"{NAMESPACE}_cache_hits",
    "cache_misses": f"{NAMESPACE}_cache_misses",
    "in_flight": f"{NAMESPACE}_in_flight_requests",
    "pool_wait": f"{NAMESPACE}_pool_wait_seconds",
    "data_version": f"{NAMESPACE}_warehouse_data_version",
}

#: Label of requests that name no catalog query (catalog, health, metrics routes).
NO_QUERY = "none"
UNKNOWN_QUERY = "unknown"
#: Status classes of ``bi_serving_responses_total`` (every one exported from the start).
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """The status class of an HTTP status.

    Args:
        status: The HTTP status code.

    Returns:
        ``"1xx"`` .. ``"5xx"`` (``"5xx"`` for anything outside 100-599).
    """
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


def multiprocess_mode() -> bool:
    """True when ``PROMETHEUS_MULTIPROC_DIR`` is set (several workers share the values)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def query_label(name: str | None) -> str:
    """``name`` when it is a catalog query, ``"none"`` for no query, else ``"unknown"``."""
    if name is None or name == NO_QUERY:
        return NO_QUERY
    return name if name in CATALOG else UNKNOWN_QUERY


class ServingMetrics:
    """The serving API's metrics, registered in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess_mode()
        reg = self.registry
        self.requests = Counter(
            "requests",
            "API requests by query and HTTP status.",
            ["query", "status"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.responses = Counter(
            "responses",
            "API responses by HTTP status class (2xx, 3xx, 4xx, 5xx; all exported from 0).",
            ["status"],
            namespace=NAMESPACE,
            registry=reg,
        )
        for cls in STATUS_CLASSES:  # the error-ratio series exist before the first error
            self.responses.labels(status=cls)
        self.latency = Histogram(
            "request_duration_seconds",
            "API request latency by query, seconds.",
            ["query"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.cache_hits = Counter(
            "cache_hits",
            "Query results served from the cache.",
            ["query"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.cache_misses = Counter(
            "cache_misses",
            "Query results computed (cache miss or cache off).",
            ["query"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.in_flight = Gauge(
            "in_flight_requests",
            "Requests being served.",
            namespace=NAMESPACE,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.pool_wait = Histogram(
            "pool_wait_seconds",
            "Seconds waited for a pooled warehouse connection.",
            namespace=NAMESPACE,
            buckets=POOL_WAIT_BUCKETS,
            registry=reg,
        )
        self.data_version = Gauge(
            "warehouse_data_version",
            "1 for the warehouse data_version being served (0 for earlier ones).",
            ["data_version"],
            namespace=NAMESPACE,
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.redis_breaker = Gauge(
            "redis_breaker_open",
            "1 while the Redis circuit breaker is open or half-open (Redis skipped), else 0.",
            namespace=NAMESPACE,
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.redis_breaker.set(0)
        self._version_lock = threading.Lock()
        self._version: str | None = None

    # -- recording -------------------------------------------------------------------
    def observe_request(self, query: str | None, status: int, seconds: float) -> None:
        """One finished request: its count by status and status class, and its latency."""
        self.record_response(query_label(query), status, seconds)

    def record_response(self, label: str, status: int, seconds: float) -> None:
        """One finished request under ``label`` as given (the caller bounds it, e.g. a
        route name): its count by status and status class, and its latency.

        Args:
            label: The ``query`` label (a catalog name or a fixed route word).
            status: The HTTP status.
            seconds: The request's duration.
        """
        status = int(status)
        self.requests.labels(query=label, status=str(status)).inc()
        self.responses.labels(status=status_class(status)).inc()
        self.latency.labels(query=label).observe(max(0.0, seconds))

    def set_redis_breaker(self, state: str) -> None:
        """Record the Redis circuit breaker's state (``"closed"``: 0, otherwise 1).

        Args:
            state: The breaker's new state.
        """
        self.redis_breaker.set(0 if state == "closed" else 1)

    def record_cache(self, query: str, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).labels(query=query_label(query)).inc()

    def observe_pool_wait(self, seconds: float) -> None:
        self.pool_wait.observe(max(0.0, seconds))

    @contextmanager
    def track_in_flight(self) -> Iterator[None]:
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def set_data_version(self, data_version: str) -> None:
        """Mark ``data_version`` as the one served (the previous one drops to 0)."""
        with self._version_lock:
            if data_version == self._version:
                return
            previous, self._version = self._version, data_version
            if previous is not None:
                if self.multiprocess:  # removal is not implemented across processes
                    self.data_version.labels(data_version=previous).set(0)
                else:
                    self.data_version.remove(previous)
            self.data_version.labels(data_version=data_version).set(1)

    # -- exposition ------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (every worker's values merged in
        multiprocess mode)."""
        if self.multiprocess:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
