"""The farm's Prometheus metrics move as stages, outcomes, scanners and stores go."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from cluster import metrics
from cluster.storage.retry import Backoff, StorageUnavailable, retrying


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_stage_is_timed_by_stage_and_status():
    before = value("mediafarm_stage_duration_seconds_count", stage="resize", status="ok")
    small = value("mediafarm_stage_duration_seconds_bucket", stage="resize", status="ok", le="0.5")
    metrics.stage_finished("resize", "ok", 0.3, None)
    assert value("mediafarm_stage_duration_seconds_count", stage="resize", status="ok") == before + 1
    assert value("mediafarm_stage_duration_seconds_bucket", stage="resize", status="ok",
                 le="0.5") == small + 1


@pytest.mark.parametrize("reason", sorted(metrics.SCANNER_REASONS))
def test_a_scan_the_scanner_stopped_counts_a_scanner_error(reason):
    before = value("mediafarm_scanner_errors_total", reason=reason)
    metrics.stage_finished("scan", "failed", 0.01, reason)
    assert value("mediafarm_scanner_errors_total", reason=reason) == before + 1


def test_a_file_the_scanner_refused_is_no_scanner_error():
    before = sum(value("mediafarm_scanner_errors_total", reason=r) for r in metrics.SCANNER_REASONS)
    metrics.stage_finished("scan", "rejected", 0.01, "infected")
    assert sum(value("mediafarm_scanner_errors_total", reason=r)
               for r in metrics.SCANNER_REASONS) == before


def test_outcomes_are_counted_by_status_and_reason():
    before = value("mediafarm_outcomes_total", status="ready", reason="none")
    infected = value("mediafarm_outcomes_total", status="rejected", reason="infected")
    metrics.outcome("ready", None)
    metrics.outcome("rejected", "infected")
    assert value("mediafarm_outcomes_total", status="ready", reason="none") == before + 1
    assert value("mediafarm_outcomes_total", status="rejected", reason="infected") == infected + 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_store_retries_and_giving_up_are_counted_by_store():
    clock, calls = Clock(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "reset")
        return "ok"

    retries = value("mediafarm_store_retries_total", store="originals")
    assert retrying("get", flaky, Backoff(budget_s=30), store="originals", sleep=clock.sleep,
                    clock=clock, jitter=lambda: 0.0) == "ok"
    assert value("mediafarm_store_retries_total", store="originals") == retries + 2

    gave_up = value("mediafarm_store_errors_total", store="renditions")

    def down() -> None:
        raise ConnectionRefusedError(111, "refused")

    with pytest.raises(StorageUnavailable):
        retrying("put", down, Backoff(budget_s=1), store="renditions", sleep=clock.sleep,
                 clock=clock, jitter=lambda: 0.0)
    assert value("mediafarm_store_errors_total", store="renditions") == gave_up + 1


def test_a_permanent_store_error_is_neither_retried_nor_counted():
    retries = value("mediafarm_store_retries_total", store="buffer")

    def missing() -> None:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        retrying("get", missing, Backoff(), store="buffer")
    assert value("mediafarm_store_retries_total", store="buffer") == retries


class FakeService:
    def __init__(self, in_flight: int, queued: int) -> None:
        self.counts = (in_flight, queued)

    def in_flight(self) -> int:
        return self.counts[0]

    def queue_depth(self) -> int:
        return self.counts[1]


def test_the_endpoints_gauges_sum_the_live_services_of_the_process():
    collector = metrics.ServiceCollector()  # not registered: read directly
    one, two = FakeService(3, 1), FakeService(2, 4)
    collector.watch(one)
    collector.watch(two)
    read = {family.name: family.samples[0].value for family in collector.collect()}
    assert read == {"mediafarm_assets_in_flight": 5, "mediafarm_submit_queue_depth": 5}
    collector.forget(two)
    read = {family.name: family.samples[0].value for family in collector.collect()}
    assert read == {"mediafarm_assets_in_flight": 3, "mediafarm_submit_queue_depth": 1}


def test_the_exposition_names_every_metric_in_the_text_format():
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"mediafarm_stage_duration_seconds", "mediafarm_outcomes", "mediafarm_scanner_errors",
            "mediafarm_store_retries", "mediafarm_store_errors", "mediafarm_assets_in_flight",
            "mediafarm_submit_queue_depth"} <= names
