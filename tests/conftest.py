"""Real services for the whole suite: PostgreSQL, clamd and S3-compatible endpoints on loopback."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from catalog import upgrade
from cluster.config import STORE_NAMES, Settings, StoreConfig
from cluster.local_clamd import LocalClamd, start_clamd
from tests.services.postgres import PostgresServer, scratch_database, server_url, throwaway_server
from tests.services.s3 import MotoEndpoint, make_bucket, start_moto

SIGNATURES = Path(__file__).parent / "signatures"
# Seconds the shared cluster's restart may take after a failed test (workers killed and
# started again by their nannies, the farm's plugin set up on each).
RESTART_S = 120

log = logging.getLogger(__name__)
_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture(scope="session")
def clamd(tmp_path_factory) -> LocalClamd:
    daemon = start_clamd(SIGNATURES, tmp_path_factory.mktemp("clamd"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def pg_server() -> str:
    with server_url() as url:
        yield url


def _migrated_scratch_database(base_url: str) -> Iterator[str]:
    with scratch_database(base_url) as url:
        upgrade(url)
        yield url


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    yield from _migrated_scratch_database(pg_server)


@pytest.fixture(scope="session")
def restartable_pg() -> PostgresServer:
    """The suite's own PostgreSQL server, for tests that stop and restart it (never the shared one)."""
    with throwaway_server() as server:
        yield server


@pytest.fixture
def restartable_pg_url(restartable_pg) -> str:
    """A fresh, migrated database on the restartable server, started again if a test left it down."""
    if not restartable_pg.running:
        restartable_pg.start()
    yield from _migrated_scratch_database(restartable_pg.url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request) -> str:
    """Each catalog test runs on the embedded default and on PostgreSQL."""
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_url")


@pytest.fixture(scope="session")
def dask_client() -> Client:
    """One real Dask cluster (worker processes on loopback) shared by the suite."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh_workers_after_a_failure(request):
    """After a failed test that used the shared cluster, restart its workers.

    A failed or timed-out test can leave work on the cluster: tasks its traceback still
    holds futures of, a task stuck in a call, a worker that no longer answers. The next
    tests must not inherit that (a stuck task takes a worker's only thread; a worker
    that does not answer fails every later ``register_plugin``). The Client object is
    kept, so module-scoped fixtures that hold it go on working.
    """
    client = request.getfixturevalue("dask_client") if "dask_client" in request.fixturenames \
        else None
    yield
    if client is None or not request.node.stash.get(_CALL_FAILED, False):
        return
    try:
        client.restart(timeout=RESTART_S)
    except Exception:  # noqa: BLE001 - said, and left to the next tests to show
        log.warning("could not restart the shared Dask cluster's workers after %s",
                    request.node.nodeid, exc_info=True)


@pytest.fixture(scope="session")
def s3_endpoint() -> MotoEndpoint:
    endpoint = start_moto()
    yield endpoint
    endpoint.stop()


def s3_store(endpoint: MotoEndpoint, prefix: str) -> StoreConfig:
    bucket = f"mf-{uuid.uuid4().hex[:12]}"
    make_bucket(endpoint.url, bucket)
    return StoreConfig(f"s3://{bucket}/{prefix}", {
        "key": "testing", "secret": "testing", "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": endpoint.url, "region_name": "us-east-1"}})


def make_settings(data_dir: Path, catalog_url: str, clamd_url: str,
                  stores: dict[str, StoreConfig] | None = None) -> Settings:
    local = {name: StoreConfig((data_dir / "stores" / name).as_uri()) for name in STORE_NAMES}
    return Settings(data_dir=str(data_dir), catalog_url=catalog_url, clamd_url=clamd_url,
                    stores={**local, **(stores or {})})
