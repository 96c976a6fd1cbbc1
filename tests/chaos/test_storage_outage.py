"""The S3 endpoint errors or vanishes mid-batch: stages retry, fail retryable, never half-write.

Every store (sources in the buffer, originals, renditions, quarantine) is a bucket on
the moto server, reached by the farm's workers through s3fs over HTTP via a
``FaultProxy`` that the test switches between passing, answering 503/500 S3 errors,
and resetting every connection.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from catalog.models import StageRun
from catalog.records import AssetRequest
from cluster.config import StoreConfig
from cluster.farm import Farm
from cluster.cli.samples import scene
from cluster.storage.sources import asset_id
from cluster.storage.stores import Store
from pipelines.recipe import Preset, Recipe
from tests.conftest import make_settings, s3_store
from tests.services.fault_proxy import FaultProxy
from tests.services.s3 import s3_filesystem

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RECIPE = Recipe("outage", (Preset("thumb", 96, 96, fit="cover"), Preset("small", 200)))
ASSETS = 10
STORES = ("buffer", "originals", "renditions", "quarantine")
OUTAGE_AFTER = 2  # assets finished before the endpoint breaks: the outage hits mid-batch


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Small JPEGs by SHA-256."""
    images = [scene(400, 300, 100 + index).jpegsave_buffer(Q=85) for index in range(ASSETS)]
    return {hashlib.sha256(data).hexdigest(): data for data in images}


@pytest.fixture(scope="module")
def calm(tmp_path_factory, photos, clamd, dask_client) -> dict[tuple[str, str], str]:
    """The renditions (source digest, preset) → digest of a run with nothing broken."""
    folder = tmp_path_factory.mktemp("calm")
    (folder / "photos").mkdir()
    for index, data in enumerate(photos.values()):
        (folder / "photos" / f"p{index:02}.jpg").write_bytes(data)
    settings = make_settings(folder / "data", f"sqlite:///{folder / 'catalog.sqlite'}", clamd.url)
    with Farm(settings, client=dask_client) as farm:
        results = farm.ingest([str(folder / "photos")], RECIPE).wait()
    assert {(r["status"], r["reason"], r["message"]) for r in results} == {("ready", None, None)}
    return _renditions(results)


@pytest.fixture
def proxy(s3_endpoint):
    with FaultProxy(s3_endpoint.url) as proxy:
        yield proxy


@pytest.fixture
def buckets(s3_endpoint) -> dict[str, StoreConfig]:
    """One fresh bucket per store, configured to reach moto directly."""
    return {name: s3_store(s3_endpoint, name) for name in STORES}


def _behind(config: StoreConfig, url: str) -> StoreConfig:
    client_kwargs = {**config.options["client_kwargs"], "endpoint_url": url}
    return StoreConfig(config.url, {**config.options, "client_kwargs": client_kwargs})


def _farm(tmp_path: Path, pg_url: str, clamd, dask_client, buckets, proxy, retry_s: float) -> Farm:
    stores = {name: _behind(config, proxy.url) for name, config in buckets.items()}
    settings = make_settings(tmp_path / "data", pg_url, clamd.url, stores)
    return Farm(replace(settings, storage_retry_s=retry_s), client=dask_client)


def _upload(buckets: dict[str, StoreConfig], photos: dict[str, bytes]) -> list[AssetRequest]:
    """Put the photos in the buffer store, straight to moto, as the HTTP endpoint's uploads land."""
    buffer = Store("buffer", buckets["buffer"])
    requests = []
    for digest, data in photos.items():
        buffer.put(digest, data)
        uri = buffer.url_for(digest)
        requests.append(AssetRequest(asset_id("default", uri), "default", uri, digest))
    return requests


def _renditions(results: list[dict]) -> dict[tuple[str, str], str]:
    return {(r["sha256"], x["preset"]): x["sha256"] for r in results for x in r["renditions"]}


def _break_mid_batch(proxy: FaultProxy, mode: str, for_s: float | None, marks: dict):
    """A progress callback: after OUTAGE_AFTER assets, switch to ``mode`` for ``for_s`` s."""
    def progress(done: int, total: int, counts) -> None:
        if done >= OUTAGE_AFTER and "broken_at" not in marks:
            marks["broken_at"] = time.monotonic()
            proxy.set_mode(mode)
            if for_s is not None:
                mend = threading.Timer(for_s, proxy.set_mode, ("pass",))
                mend.daemon = True
                mend.start()
                marks["mend"] = mend
    return progress


def _stage_runs(farm: Farm, asset_ids: list[str]) -> list:
    with farm.catalog.engine.connect() as conn:
        return conn.execute(select(
            StageRun.asset_id, StageRun.stage, StageRun.attempt, StageRun.status, StageRun.reason,
            StageRun.duration_ms, StageRun.details).where(StageRun.asset_id.in_(asset_ids))).all()


def _audit_buckets(endpoint_url: str, buckets: dict[str, StoreConfig]) -> dict[str, int]:
    """Read every object straight from moto: each must sit at sha256/ab/cd/<digest of its bytes>.

    Also: no multipart upload left open. Returns the number of objects per store.
    """
    fs = s3_filesystem(endpoint_url)
    counts = {}
    for name, config in buckets.items():
        bucket = config.url.removeprefix("s3://").split("/")[0]
        keys = fs.find(bucket)
        for key in keys:
            match = re.fullmatch(rf"{bucket}/{name}/sha256/(..)/(..)/([0-9a-f]{{64}})", key)
            assert match, f"{key}: not a content-addressed object (partial or stray write?)"
            digest = match[3]
            assert match[1] + match[2] == digest[:4], f"{key}: misplaced"
            assert hashlib.sha256(fs.cat_file(key)).hexdigest() == digest, \
                f"{key}: its bytes do not hash to its name (a half-written object)"
        uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
        assert uploads == [], f"{bucket}: multipart uploads left open: {uploads}"
        counts[name] = len(keys)
    return counts


def _longest_stages(runs: list, top: int = 3) -> list[tuple[str, str, float]]:
    longest = sorted(runs, key=lambda r: r.duration_ms, reverse=True)[:top]
    return [(r.stage, r.status, round(r.duration_ms / 1000, 2)) for r in longest]


@pytest.mark.parametrize("mode", ["error", "down"])
def test_a_short_outage_mid_batch_is_ridden_out(mode, tmp_path, pg_url, clamd, dask_client,
                                                 s3_endpoint, buckets, proxy, photos, calm):
    outage_s, retry_s = 4.0, 20.0
    requests = _upload(buckets, photos)
    marks: dict = {}
    with _farm(tmp_path, pg_url, clamd, dask_client, buckets, proxy, retry_s) as farm:
        started = time.monotonic()
        results = farm.submit(requests, RECIPE).wait(
            progress=_break_mid_batch(proxy, mode, outage_s, marks))
        elapsed = time.monotonic() - started
        runs = _stage_runs(farm, [r.asset_id for r in requests])

    assert "broken_at" in marks, "the batch ended before the outage began"
    marks["mend"].join()
    refused = proxy.counts["error_503"] + proxy.counts["error_500"] + proxy.counts["reset"]
    assert refused > 0, f"no request met the outage: {dict(proxy.counts)}"
    assert [(r["status"], r["reason"]) for r in results] == [("ready", None)] * ASSETS
    assert _renditions(results) == calm  # the same renditions as with nothing broken
    assert {r.status for r in runs} == {"ok"}
    objects = _audit_buckets(s3_endpoint.url, buckets)
    assert objects == {"buffer": ASSETS, "originals": ASSETS,
                       "renditions": len(set(calm.values())), "quarantine": 0}
    waited = max(r.duration_ms for r in runs) / 1000
    assert outage_s / 2 < waited < outage_s + retry_s  # stages waited the outage out, no longer
    print(f"\n[{mode}] outage {outage_s:g} s, budget {retry_s:g} s: batch {elapsed:.1f} s, "
          f"requests refused {dict(proxy.counts)}, longest stages {_longest_stages(runs)}")


def test_an_outage_past_the_budget_fails_retryable_and_a_rerun_finishes(
        tmp_path, pg_url, clamd, dask_client, s3_endpoint, buckets, proxy, photos, calm):
    retry_s = 3.0
    requests = _upload(buckets, photos)
    marks: dict = {}
    with _farm(tmp_path, pg_url, clamd, dask_client, buckets, proxy, retry_s) as farm:
        first = farm.submit(requests, RECIPE).wait(
            progress=_break_mid_batch(proxy, "down", None, marks))
        runs = _stage_runs(farm, [r.asset_id for r in requests])
        down_counts = dict(proxy.counts)

        failed = [r for r in first if r["status"] != "ready"]
        assert failed, "no asset met the outage"
        assert len(failed) < ASSETS, "the outage began before the batch did"
        for result in failed:
            assert (result["status"], result["reason"], result["retryable"]) == (
                "failed", "storage_unavailable", True), result
            # It names the object and its store, the attempts, the time and the last error.
            assert re.fullmatch(r"(reading|writing|checking) .*s3://mf-\w+/\w+.* failed \d+ times "
                                r"over [\d.]+ s \(budget 3 s\); last error: \w+: .+",
                                result["message"], re.S), result["message"]
            assert result["renditions"] == []
        stops = [r for r in runs if r.status == "failed"]
        assert {r.reason for r in stops} == {"storage_unavailable"}
        gave_up = [r.details["elapsed_s"] for r in stops]
        assert all(retry_s <= s < retry_s + 5 for s in gave_up), gave_up

        # Nothing half-written anywhere, and every source is still where it was uploaded.
        _audit_buckets(s3_endpoint.url, buckets)
        buffer = Store("buffer", buckets["buffer"])
        assert all(buffer.get(digest) == data for digest, data in photos.items())
        originals = Store("originals", buckets["originals"])
        hashed = {r["sha256"] for r in first if r["sha256"]}
        assert all(originals.exists(digest) for digest in hashed)

        proxy.set_mode("pass")
        second = farm.submit(requests, RECIPE).wait()
        redone = {r.asset_id for r in _stage_runs(farm, [r.asset_id for r in requests])
                  if r.attempt == 2}

    assert [(r["status"], r["reason"]) for r in second] == [("ready", None)] * ASSETS
    assert redone == {r["id"] for r in failed}  # only the failed assets ran again
    assert _renditions(second) == calm
    _audit_buckets(s3_endpoint.url, buckets)
    print(f"\n[down past the budget] budget {retry_s:g} s: {len(failed)} of {ASSETS} failed, "
          f"requests refused {down_counts}, gave up after {sorted(gave_up)} s, "
          f"attempts {sorted(r.details['attempts'] for r in stops)}, "
          f"failing stages {sorted(r.stage for r in stops)}")
