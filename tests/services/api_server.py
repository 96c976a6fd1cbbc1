"""Run ``mediafarm serve`` as a real process on a loopback port, configured like production."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select

from catalog import connect, upgrade
from catalog.models import Asset
from cluster.http.auth import create_token
from cluster.config import Settings
from cluster.storage.stores import Store
from tests.conftest import make_settings


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully, closing the Farm), then kill if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Deployment:
    """A running server and the settings it was started with."""

    server: ApiServer
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, owner: str, scopes: str = "submit,read") -> dict[str, str]:
        """Authorization headers for a fresh token of ``owner``."""
        _, token = create_token(connect(self.settings.catalog_url), owner, scopes.split(","))
        return {"Authorization": f"Bearer {token}"}

    def store(self, name: str) -> Store:
        return Store(name, self.settings.stores[name])

    def asset_count(self, owner: str) -> int:
        """How many assets the catalog holds for ``owner`` (whatever their status)."""
        with connect(self.settings.catalog_url).connect() as conn:
            return conn.execute(select(func.count()).select_from(Asset)
                                .where(Asset.owner == owner)).scalar_one()


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``MEDIAFARM_*`` variables that make ``load_settings`` return ``settings``."""
    env = {"MEDIAFARM_DATA_DIR": settings.data_dir, "MEDIAFARM_CATALOG_URL": settings.catalog_url,
           "MEDIAFARM_CLAMD_URL": settings.clamd_url}
    for name, store in settings.stores.items():
        env[f"MEDIAFARM_STORE_{name.upper()}_URL"] = store.url
        if store.options:
            env[f"MEDIAFARM_STORE_{name.upper()}_OPTIONS"] = json.dumps(store.options)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api_server(settings: Settings, log_dir: Path, *, scheduler: str | None = None,
                     workers: int | None = None, extra_env: dict[str, str] | None = None,
                     recipe: Path | None = None, timeout: float = 90) -> ApiServer:
    """Start the server and wait until it answers ``/healthz`` (after its Farm is up)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDIAFARM_", "FSSPEC_")) and k != "DASK_SCHEDULER_ADDRESS"}
    env.update(settings_env(settings))
    env.update(extra_env or {})
    port = free_port()
    command = [sys.executable, "-m", "cluster.cli.main", "serve", "--host", "127.0.0.1",
               "--port", str(port)]  # the default log level: requests are logged, as users see
    if scheduler:
        command += ["--scheduler", scheduler]
    if workers:
        command += ["--workers", str(workers)]
    if recipe:
        command += ["--recipe", str(recipe)]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ApiServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mediafarm serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2, trust_env=False).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"mediafarm serve did not answer within {timeout}s:\n{server.log()}")
        time.sleep(0.2)


@contextmanager
def sqlite_deployment(root: Path, clamd_url: str, scheduler: str,
                      extra_env: dict[str, str] | None = None) -> Iterator[Deployment]:
    """A server on local stores and a SQLite catalog under ``root``, using ``scheduler``."""
    settings = make_settings(root / "data", f"sqlite:///{root / 'data' / 'catalog.sqlite'}",
                             clamd_url)
    upgrade(settings.catalog_url)
    server = start_api_server(settings, root, scheduler=scheduler, extra_env=extra_env)
    try:
        yield Deployment(server, settings)
    finally:
        server.stop()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """``response`` is the API's error shape with ``status`` (and ``code``); returns its body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["message"], body
    if code:
        assert body["error"] == code, body
    return body


def wait_terminal(client: httpx.Client, status_url: str, headers: dict[str, str],
                  timeout: float = 90) -> dict:
    """Poll an asset until it is ready, rejected or failed (waiting out any 429)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url, headers=headers)
        if response.status_code == 429:
            time.sleep(int(response.headers["retry-after"]))
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("ready", "rejected", "failed"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"asset still {body['status']} after {timeout}s: {body}")
        time.sleep(0.25)
