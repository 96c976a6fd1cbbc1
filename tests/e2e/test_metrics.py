"""Prometheus metrics move with real work: a real ingest on the suite's Dask workers (scraped
at the URL each worker's Mediafarm plugin announces: Dask's own /metrics), and a scan stopped
by an unreachable clamd."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from catalog import Catalog
from cluster import recorder
from cluster.cli.samples import scene, write_samples
from cluster.farm import Farm
from cluster.tasks import Job, scan_task
from cluster.worker_plugin import worker_reports
from pipelines.recipe import DEFAULT_RECIPE
from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _scrape(urls: list[str]) -> Counter:
    """Every sample of the farm's metrics, summed over the workers, by name and labels."""
    samples: Counter = Counter()
    with httpx.Client(timeout=30, trust_env=False) as http:
        for url in urls:
            answer = http.get(url)
            assert answer.status_code == 200, url
            for family in text_string_to_metric_families(answer.text):
                for sample in family.samples:
                    if sample.name.startswith("mediafarm_"):
                        samples[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return samples


def _delta(after: Counter, before: Counter, name: str) -> dict[tuple, float]:
    return {labels: after[(n, labels)] - before[(n, labels)] for n, labels in after
            if n == name and after[(n, labels)] != before[(n, labels)]}


def test_a_real_ingest_moves_the_workers_stage_and_outcome_metrics(tmp_path, sqlite_url, clamd,
                                                                   dask_client):
    samples = write_samples(tmp_path / "samples", photos=1)
    settings = make_settings(tmp_path / "data", sqlite_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        reports = worker_reports(farm.client)
        urls = [report["metrics"] for report in reports.values()]
        assert len(urls) == 2 and all(u.startswith("http://") and u.endswith("/metrics")
                                      for u in urls)
        before = _scrape(urls)
        results = farm.ingest([str(p) for p in samples]).wait()
        after = _scrape(urls)

    ended = Counter((r["status"], r["reason"] or "none") for r in results)
    assert ended[("ready", "none")] >= 2 and ended[("rejected", "infected")] == 1
    outcomes = {(dict(labels)["status"], dict(labels)["reason"]): n
                for labels, n in _delta(after, before, "mediafarm_outcomes_total").items()}
    assert outcomes == {key: float(n) for key, n in ended.items()}
    scans = _delta(after, before, "mediafarm_stage_duration_seconds_count")
    ran: Counter = Counter()
    for labels, n in scans.items():
        ran[dict(labels)["stage"]] += n
    assert ran["scan"] == len(results) and ran["record"] == ended[("ready", "none")]
    assert {dict(labels)["status"] for labels in scans} >= {"ok", "rejected"}
    assert any(n > 0 for labels, n in _delta(after, before, "mediafarm_stage_duration_seconds_sum")
               .items() if dict(labels)["stage"] == "resize")


def test_a_scan_clamd_does_not_answer_counts_a_scanner_error(tmp_path, sqlite_url):
    source = tmp_path / "photo.jpg"
    source.write_bytes(scene(320, 240, 7).jpegsave_buffer(Q=85))
    settings = make_settings(tmp_path / "data", sqlite_url, "tcp://127.0.0.1:9")  # nothing there
    job = Job("asset-1", 1, source.as_uri(), DEFAULT_RECIPE, settings)
    labels = {"reason": "scanner_unavailable"}
    before = REGISTRY.get_sample_value("mediafarm_scanner_errors_total", labels) or 0.0
    failed = REGISTRY.get_sample_value("mediafarm_stage_duration_seconds_count",
                                       {"stage": "scan", "status": "failed"}) or 0.0
    with recorder.buffered(Catalog(settings.catalog_url)):
        carry = scan_task(job)
    assert carry.stop.reason == "scanner_unavailable"
    assert REGISTRY.get_sample_value("mediafarm_scanner_errors_total", labels) == before + 1
    assert REGISTRY.get_sample_value("mediafarm_stage_duration_seconds_count",
                                     {"stage": "scan", "status": "failed"}) == failed + 1
