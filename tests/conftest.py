"""Real services for the whole suite: PostgreSQL, clamd and S3-compatible endpoints on loopback."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from catalog import upgrade
from cluster.config import STORE_NAMES, Settings, StoreConfig
from cluster.cli.local_clamd import LocalClamd, start_clamd
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
def _shared_cluster_guard(request):
    """Watch a test that uses the shared cluster; after it fails, restart the workers.

    Shortly before pytest-timeout would stop such a test, every worker's threads and
    the scheduler's view of the tasks still running are written to stderr (captured
    with the test's output): pytest-timeout's own dump shows only this process, and a
    hang is in a worker as often as not.

    A failed or timed-out test can leave work on the cluster: tasks its traceback still
    holds futures of, a task stuck in a call, a worker that no longer answers. The next
    tests must not inherit that (a stuck task takes a worker's only thread; a worker
    that does not answer fails every later ``register_plugin``), so its workers are
    restarted. The Client object is kept: module-scoped fixtures holding it go on working.
    """
    if "dask_client" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("dask_client")
    limit = _timeout_s(request.node)
    watch = threading.Timer(max(limit - 30, limit * 0.8), _dump_cluster,
                            (client, request.node.nodeid)) if limit else None
    if watch:
        watch.daemon = True
        watch.start()
    try:
        yield
    finally:
        if watch:
            watch.cancel()
    if not request.node.stash.get(_CALL_FAILED, False):
        return
    try:
        client.restart(timeout=RESTART_S)
    except Exception:  # noqa: BLE001 - said, and left to the next tests to show
        log.warning("could not restart the shared Dask cluster's workers after %s",
                    request.node.nodeid, exc_info=True)


def _timeout_s(item) -> float:
    """The test's pytest-timeout limit in seconds (its marker, else the ini's); 0 for none."""
    marker = item.get_closest_marker("timeout")
    try:
        if marker is not None:
            return float(marker.kwargs.get("timeout", marker.args[0] if marker.args else 0))
        return float(item.config.getini("timeout") or 0)
    except (ValueError, TypeError):
        return 0.0


def _thread_stacks() -> str:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(f"--- {names.get(ident, ident)}\n{''.join(traceback.format_stack(frame))}"
                     for ident, frame in sys._current_frames().items())


def _dump_cluster(client: Client, nodeid: str) -> None:
    """Write what the shared cluster is doing, piece by piece (a piece may never answer)."""
    def say(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    say(f"==== {nodeid} is close to its timeout: the shared Dask cluster")
    try:
        say(f"tasks processing, by worker: {client.processing()}")
        say(f"their call stacks: {client.call_stack()}")
        say(f"scheduler task states: {client.run_on_scheduler(_task_states)}")
        for worker, stacks in client.run(_thread_stacks).items():
            say(f"==== threads of worker {worker}\n{stacks}")
    except Exception as exc:  # noqa: BLE001 - a diagnostic: say what failed and stop
        say(f"(could not read the cluster: {exc!r})")


def _task_states(dask_scheduler) -> dict[str, int]:
    states: dict[str, int] = {}
    for task in dask_scheduler.tasks.values():
        states[task.state] = states.get(task.state, 0) + 1
    return states


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
