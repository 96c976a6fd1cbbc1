"""Completion webhooks end to end: a real server process POSTs signed events to loopback
receivers (the allow-list names 127.0.0.1), retries failures, gives up, never follows a
redirect, and refuses callback URLs off the list at submit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from catalog import upgrade
from catalog.db import connect
from catalog.webhooks import deliveries
from cluster.cli.samples import scene
from cluster.http.webhook_rules import verify
from tests.conftest import make_settings
from tests.services.api_server import Deployment, start_api_server
from tests.services.api_server import assert_error as _error
from tests.services.postgres import scratch_database

MAX_ATTEMPTS = 3
WEBHOOK_ENV = {"MEDIAFARM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
               "MEDIAFARM_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
               "MEDIAFARM_WEBHOOK_RETRY": "0.2", "MEDIAFARM_WEBHOOK_TIMEOUT": "0.5",
               "MEDIAFARM_WEBHOOK_INTERVAL": "0.2"}


@dataclass
class Receiver:
    """A loopback HTTP listener that answers each path as told, and keeps what came."""

    answers: dict[str, list] = field(default_factory=dict)  # path -> what to answer, in turn
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def hits(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for p, headers, body in list(self.received) if p == path]


def _serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.received.append((self.path, dict(self.headers), body))
            script = receiver.answers.get(self.path, [200])
            answer = script.pop(0) if len(script) > 1 else script[0]
            if isinstance(answer, float):  # hang past the farm's timeout (bounded)
                time.sleep(answer)
                answer = 200
            headers = {"Location": answer[1]} if isinstance(answer, tuple) else {}
            self.send_response(answer[0] if isinstance(answer, tuple) else answer)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    """The receiver, and another loopback listener that only a followed redirect would reach."""
    made = [Receiver(), Receiver()]
    for receiver in made:
        receiver.server = _serve(receiver)
    yield made[0], made[1]
    for receiver in made:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(scope="module")
def api(tmp_path_factory, clamd, dask_client, pg_server) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("http-webhooks")
    with scratch_database(pg_server) as catalog_url:
        upgrade(catalog_url)
        settings = make_settings(root / "data", catalog_url, clamd.url)
        server = start_api_server(settings, root, scheduler=dask_client.scheduler.address,
                                  extra_env=WEBHOOK_ENV)
        yield Deployment(server, settings)
        server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def _upload(api, http, seed: int, callback: str, owner: str = "alice") -> str:
    answer = http.post(f"{api.url}/v1/assets", headers=api.token(owner),
                       data={"callback_url": callback},
                       files={"file": (f"photo-{seed}.jpg",
                                       scene(160, 120, seed).jpegsave_buffer(Q=85), "image/jpeg")})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def _settled(api, asset_id: str, owner: str = "alice", timeout: float = 120) -> dict:
    """The asset's one delivery, once it is no longer pending."""
    engine = connect(api.settings.catalog_url)
    deadline = time.monotonic() + timeout
    while True:
        [row] = deliveries(engine, owner, asset_id=asset_id)
        if row["status"] != "pending":
            return row
        assert time.monotonic() < deadline, f"delivery still pending: {row}"
        time.sleep(0.2)


def test_a_ready_assets_webhook_arrives_once_signed(api, http, receivers):
    receiver, _ = receivers
    asset_id = _upload(api, http, 51, f"{receiver.url}/ok")
    row = _settled(api, asset_id)
    assert (row["status"], row["attempts"], row["last_status_code"], row["event"]) == (
        "delivered", 1, 200, "asset.ready")
    time.sleep(1)  # a few more rounds of the delivery loop: nothing is sent again
    [(headers, body)] = receiver.hits("/ok")
    secret = http.get(f"{api.url}/v1/webhook-secret", headers=api.token("alice", "read"))
    assert secret.status_code == 200 and secret.json()["header"] == "Mediafarm-Signature"
    assert verify(secret.json()["secret"], headers["Mediafarm-Signature"], body, int(time.time()))
    event = json.loads(body)
    assert event["event"] == "asset.ready" and event["asset_id"] == asset_id
    assert event["status"] == "ready" and event["reason"] is None
    assert event["renditions"] >= 1 and len(event["sha256"]) == 64 and event["at"]
    asset = http.get(f"{api.url}/v1/assets/{asset_id}", headers=api.token("alice")).json()
    assert event["sha256"] == asset["sha256"] and event["renditions"] == len(asset["renditions"])
    # another owner's secret is another secret, and does not verify alice's events
    bobs = http.get(f"{api.url}/v1/webhook-secret", headers=api.token("bob", "read")).json()
    assert bobs["secret"] != secret.json()["secret"]
    assert not verify(bobs["secret"], headers["Mediafarm-Signature"], body, int(time.time()))


def test_a_receiver_answering_500_twice_gets_it_on_the_third_attempt(api, http, receivers):
    receiver, _ = receivers
    receiver.answers["/flaky"] = [500, 500, 200]
    row = _settled(api, _upload(api, http, 52, f"{receiver.url}/flaky"))
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 3, 200)
    assert len(receiver.hits("/flaky")) == 3
    bodies = {body for _, body in receiver.hits("/flaky")}
    assert len(bodies) == 1  # the same event each time, with the same delivery id


def test_a_receiver_that_times_out_is_retried_then_given_up(api, http, receivers):
    receiver, _ = receivers
    receiver.answers["/slow"] = [2.0]  # past MEDIAFARM_WEBHOOK_TIMEOUT, every time
    row = _settled(api, _upload(api, http, 53, f"{receiver.url}/slow"))
    assert (row["status"], row["attempts"], row["last_status_code"]) == (
        "given_up", MAX_ATTEMPTS, None)
    assert "Timeout" in row["last_error"]
    assert len(receiver.hits("/slow")) == MAX_ATTEMPTS


def test_a_redirect_is_never_followed_and_is_given_up(api, http, receivers):
    receiver, elsewhere = receivers
    receiver.answers["/moved"] = [(302, f"{elsewhere.url}/target")]
    receiver.answers["/moved-307"] = [(307, f"{elsewhere.url}/target")]
    rows = [_settled(api, _upload(api, http, seed, f"{receiver.url}{path}"))
            for seed, path in ((54, "/moved"), (55, "/moved-307"))]
    for row, code in zip(rows, (302, 307)):
        assert (row["status"], row["attempts"], row["last_status_code"]) == (
            "given_up", MAX_ATTEMPTS, code)
        assert "not followed" in row["last_error"]
    assert len(receiver.hits("/moved")) == len(receiver.hits("/moved-307")) == MAX_ATTEMPTS
    assert elsewhere.received == []


@pytest.mark.parametrize("callback", [
    "http://localhost:9/hook",          # loopback, but not the host the list names
    "http://10.0.0.1/hook", "https://example.com/hook", "ftp://127.0.0.1/hook",
    "http://user:pw@127.0.0.1/hook", "not a url",
])
def test_a_callback_off_the_allowed_hosts_is_refused_at_submit(api, http, callback):
    before = api.asset_count("carol")
    answer = http.post(f"{api.url}/v1/assets", headers=api.token("carol"),
                       data={"callback_url": callback},
                       files={"file": ("p.jpg", scene(64, 48, 56).jpegsave_buffer(Q=85),
                                       "image/jpeg")})
    _error(answer, 422, "callback_not_allowed")
    _error(http.post(f"{api.url}/v1/assets", headers=api.token("carol"),
                     json={"source_uri": "memory://nothing", "callback_url": callback}),
           422, "callback_not_allowed")
    _error(http.post(f"{api.url}/v1/jobs", headers=api.token("carol", "admin"),
                     json={"kind": "backfill", "manifest": "catalog:owner=carol",
                           "callback_url": callback}), 422, "callback_not_allowed")
    assert api.asset_count("carol") == before


def test_a_jobs_webhook_arrives_when_it_finishes(api, http, receivers):
    receiver, _ = receivers
    admin = api.token("dora", "submit,read,admin")
    recipe = {"name": "tiny", "presets": [{"name": "tiny", "width": 64, "format": "webp"}]}
    started = http.post(f"{api.url}/v1/jobs", headers=admin, json={
        "kind": "reencode", "where": "owner=nobody-here", "recipe": recipe,
        "callback_url": f"{receiver.url}/job"})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    engine = connect(api.settings.catalog_url)
    deadline = time.monotonic() + 120
    while (row := deliveries(engine, "dora", job_id=job_id)[0])["status"] == "pending":
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    assert (row["status"], row["event"], row["attempts"]) == ("delivered", "job.finished", 1)
    [(headers, body)] = receiver.hits("/job")
    secret = http.get(f"{api.url}/v1/webhook-secret", headers=admin).json()["secret"]
    assert verify(secret, headers["Mediafarm-Signature"], body, int(time.time()))
    assert json.loads(body)["job_id"] == job_id and json.loads(body)["status"] == "finished"
