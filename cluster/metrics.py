"""The farm's Prometheus metrics (prometheus-client), in the process's default registry.

Defined once, at import, in ``prometheus_client.REGISTRY``: on a Dask worker that is the
registry Dask's own ``/metrics`` serves on the worker's dashboard port, so the stage,
outcome, scanner and store metrics of a worker appear there beside Dask's; the HTTP
endpoint serves the same registry of its own process at ``/metrics`` (admin scope), with
its submit queue and assets in flight. Labels take a small, fixed set of values (stage
names, statuses, reasons, store names): never an asset, a key or a URL.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Stages run from milliseconds (a thumbnail) to many minutes (a long video's ladder).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                 600, 1800, 3600)
# The reasons a scan stops for because of the scanner itself, not the file.
SCANNER_REASONS = frozenset({"scanner_unavailable", "scanner_error", "scanner_misconfigured"})

STAGE_SECONDS = Histogram(
    "mediafarm_stage_duration_seconds", "How long one stage took for one asset, by stage and "
    "how it ended (ok, skipped, rejected, failed)", ("stage", "status"), buckets=STAGE_BUCKETS)
OUTCOMES = Counter(
    "mediafarm_outcomes_total", "Assets that reached a terminal status, by status and reason "
    "(reason 'none' for ready)", ("status", "reason"))
SCANNER_ERRORS = Counter(
    "mediafarm_scanner_errors_total", "Scans stopped by the scanner, not the file: clamd "
    "unreachable, answering oddly, or not failing closed", ("reason",))
STORE_RETRIES = Counter(
    "mediafarm_store_retries_total", "Transient store errors that were retried", ("store",))
STORE_ERRORS = Counter(
    "mediafarm_store_errors_total", "Store operations given up after their retry budget "
    "(storage_unavailable)", ("store",))


def stage_finished(stage: str, status: str, seconds: float, reason: str | None) -> None:
    """Count one stage run: its duration, and a scanner error where the scanner stopped it."""
    STAGE_SECONDS.labels(stage, status).observe(max(seconds, 0.0))
    if reason in SCANNER_REASONS:
        SCANNER_ERRORS.labels(reason).inc()


def outcome(status: str, reason: str | None) -> None:
    OUTCOMES.labels(status, reason or "none").inc()


def store_retry(store: str) -> None:
    STORE_RETRIES.labels(store).inc()


def store_gave_up(store: str) -> None:
    STORE_ERRORS.labels(store).inc()


class ServiceCollector(Collector):
    """Gauges read from the live HTTP services of this process when scraped: assets whose
    graphs the endpoint holds, and requests waiting in its submit queue."""

    def __init__(self) -> None:
        self._sources: weakref.WeakSet = weakref.WeakSet()

    def watch(self, service) -> None:
        """Report ``service`` (anything with ``in_flight()`` and ``queue_depth()``) while it lives."""
        self._sources.add(service)

    def forget(self, service) -> None:
        self._sources.discard(service)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        services = list(self._sources)
        yield _gauge("mediafarm_assets_in_flight",
                     "Assets submitted by the HTTP endpoint whose graphs have not finished",
                     services, lambda s: s.in_flight())
        yield _gauge("mediafarm_submit_queue_depth",
                     "Requests waiting in the HTTP endpoint's submit queue for the scheduler",
                     services, lambda s: s.queue_depth())


def _gauge(name: str, text: str, services: list, read: Callable) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=float(sum(read(s) for s in services)))


SERVICES = ServiceCollector()
REGISTRY.register(SERVICES)


def exposition() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
