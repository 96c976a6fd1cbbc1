"""What the HTTP endpoint does with hostile clients: malformed input, slow sockets, token guessing,
forged Host headers. Real ``mediafarm serve`` processes on loopback, raw sockets where it matters.

Traffic goes only to 127.0.0.1 (some tests send from 127.0.0.2, another loopback source
address, to stand for a second client), bounded in count and time.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog import upgrade
from cluster.cli.samples import scene
from tests.conftest import make_settings
from tests.services.api_server import Deployment, sqlite_deployment, start_api_server, wait_terminal
from tests.services.api_server import assert_error as _error
from tests.services.postgres import _conninfo, scratch_database

pytestmark = [pytest.mark.slow]

PUBLIC = "https://media.example.test"
FAILED_AUTH_BURST = 10
OTHER_CLIENT = "127.0.0.2"  # a second loopback source address: another client, same machine


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, clamd, dask_client, pg_server) -> Deployment:
    """Short read timeouts, a configured public URL, a tight failed-authentication budget."""
    root = tmp_path_factory.mktemp("http-hostile")
    (root / "spool").mkdir()
    with scratch_database(pg_server) as catalog_url:
        upgrade(catalog_url)
        settings = make_settings(root / "data", catalog_url, clamd.url)
        server = start_api_server(settings, root, scheduler=dask_client.scheduler.address,
                                  extra_env={
                                      "MEDIAFARM_API_HEADER_TIMEOUT": "2",
                                      "MEDIAFARM_API_BODY_TIMEOUT": "2",
                                      "MEDIAFARM_API_MAX_UNAUTHENTICATED_CONNECTIONS": "200",
                                      "MEDIAFARM_API_PUBLIC_URL": PUBLIC,
                                      "MEDIAFARM_API_SPOOL_DIR": str(root / "spool"),
                                      "MEDIAFARM_API_RATE_LIMIT": "1000",
                                      "MEDIAFARM_API_RATE_BURST": "1000",
                                      "MEDIAFARM_API_CLIENT_RATE_LIMIT": "0.01",
                                      "MEDIAFARM_API_CLIENT_RATE_BURST": str(FAILED_AUTH_BURST)})
        yield Deployment(server, settings)
        server.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, clamd, dask_client) -> Deployment:
    """127.0.0.1 is a trusted reverse proxy; a long header timeout; few idle connections each."""
    with sqlite_deployment(tmp_path_factory.mktemp("http-proxied"), clamd.url,
                           dask_client.scheduler.address,
                           {"MEDIAFARM_API_TRUSTED_PROXIES": "127.0.0.1",
                            "MEDIAFARM_API_HEADER_TIMEOUT": "120",
                            "MEDIAFARM_API_MAX_UNAUTHENTICATED_CONNECTIONS": "4",
                            "MEDIAFARM_API_CLIENT_RATE_LIMIT": "0.01",
                            "MEDIAFARM_API_CLIENT_RATE_BURST": "5"}) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def _address(deployment: Deployment) -> tuple[str, int]:
    host, port = deployment.url.removeprefix("http://").split(":")
    return host, int(port)


def _connect(deployment: Deployment, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(_address(deployment), timeout=30, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _fresh_bad_token() -> str:
    return "mf_" + secrets.token_urlsafe(32)  # the shape of a real token, known to nobody


# -- 5xx from input ---------------------------------------------------------------------------


def test_deep_nesting_and_lone_surrogates_are_4xx_with_a_reason(http, guarded):
    admin = guarded.token("zed", "submit,read,admin")
    as_json = {**admin, "Content-Type": "application/json"}
    url = guarded.url
    _error(http.post(f"{url}/v1/assets", headers=as_json, content=b"[" * 20000), 400,
           "invalid_json")
    _error(http.post(f"{url}/v1/uploads", headers=as_json, content=b'{"a":' * 5000), 400,
           "invalid_json")
    lone = b'"\\ud800"'
    buffer = guarded.store("buffer").url.encode()
    for path, body in [
        ("/v1/assets", b'{"source_uri": "%s/\\ud800.jpg"}' % buffer),
        ("/v1/assets", b'{"source_uri": %s}' % lone),
        ("/v1/jobs", b'{"kind": "reencode", "where": "owner=\\ud800", "recipe": {"presets": []}}'),
        ("/v1/jobs", b'{"kind": "reencode", "where": %s, "recipe": {"presets": []}}' % lone),
        ("/v1/jobs", b'{"kind": "backfill", "manifest": "catalog:owner=%s"}' % lone[1:-1]),
        ("/v1/jobs", b'{"kind": "backfill", "manifest": "catalog:status=failed", "owner": %s}'
         % lone),
        ("/v1/uploads", b'{"content_type": %s}' % lone),
        ("/v1/uploads", b'{%s: 1}' % lone),
    ]:
        _error(http.post(f"{url}{path}", headers=as_json, content=body), 422)


def test_odd_path_parameters_and_header_bytes_are_4xx(http, guarded):
    admin = guarded.token("zed", "submit,read,admin")
    for path in ["/v1/assets/%ED%A0%80", "/v1/assets/%FF%FE", "/v1/jobs/%ED%A0%80",
                 "/v1/renditions/%ED%A0%80", "/v1/uploads/%ED%A0%80/complete"]:
        method = "POST" if path.endswith("complete") else "GET"
        _error(http.request(method, f"{guarded.url}{path}", headers=admin), 404, "not_found")
    for key in [b"\xff\xfe", b"\xed\xa0\x80", "é".encode("latin-1"), b"a" * 201]:
        response = http.post(f"{guarded.url}/v1/assets", files={"file": ("a.jpg", b"x", "image/jpeg")},
                             headers=[*admin.items(), ("Idempotency-Key", key)])
        _error(response, 422, "invalid_idempotency_key")
    for token in [b"mf_\xff\xfe", b"mf_\xed\xa0\x80" * 20, b"\x80" * 50]:
        response = http.get(f"{guarded.url}/v1/assets/{uuid.uuid4()}",
                            headers=[("Authorization", b"Bearer " + token)])
        assert response.status_code in (401, 429), response.text


JSON_PATHS = ["/v1/assets", "/v1/uploads", "/v1/jobs"]


def _nested(depth: int, open_: bytes) -> bytes:
    return open_ * depth


_bodies = st.one_of(
    st.binary(max_size=2048),
    st.builds(_nested, st.integers(1, 30000), st.sampled_from([b"[", b'{"a":', b"[{\"b\":"])),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=20).map(lambda value: json.dumps(value).encode()),
    # Strings with lone surrogates, NUL and other odd code points in every field the API reads.
    st.builds(lambda field, text: json.dumps({field: text}).encode(),
              st.sampled_from(["source_uri", "content_type", "size", "kind", "where", "manifest",
                               "owner", "recipe"]),
              st.text(alphabet=st.characters(categories=["Cs", "Cc", "Cn", "Co", "L", "S"]),
                      max_size=20)
              | st.sampled_from(["\ud800", "\udfff", "a\ud83d", "\x00", "\ufffe"])),
)


def test_fuzzed_json_bodies_are_never_answered_5xx(http, guarded):
    admin = guarded.token("fuzz", "submit,read,admin")

    @given(path=st.sampled_from(JSON_PATHS), body=_bodies,
           key=st.none() | st.lists(st.integers(0x21, 0xFF), min_size=1, max_size=40).map(bytes))
    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(path: str, body: bytes, key: bytes | None) -> None:
        headers = [*admin.items(), ("Content-Type", "application/json")]
        if key is not None:
            headers.append(("Idempotency-Key", key))
        response = http.post(f"{guarded.url}{path}", headers=headers, content=body)
        assert response.status_code < 500, (path, body[:200], response.text)
        if response.status_code >= 400:
            assert response.json()["error"] and response.json()["message"]

    check()


# -- slow clients -----------------------------------------------------------------------------


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (reading whatever it answered first)."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except OSError:
        return True
    return False


def test_slow_headers_and_slow_bodies_are_cut_off_while_others_are_served(http, guarded):
    host = f"Host: {guarded.url.removeprefix('http://')}\r\n".encode()
    slow = []
    for _ in range(20):  # headers that never end
        sock = _connect(guarded)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + host + b"X-Slow: ")
        slow.append((sock, b"a"))
    for _ in range(20):  # a body that never ends, and no token
        sock = _connect(guarded)
        sock.sendall(b"POST /v1/assets HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n{")
        slow.append((sock, b" "))
    open_ = dict(slow)
    served = 0
    deadline = time.monotonic() + 45
    try:
        while open_ and time.monotonic() < deadline:
            for sock, byte in list(open_.items()):  # one byte each, every half second
                try:
                    sock.send(byte)
                except OSError:
                    pass
                if _closed(sock):
                    del open_[sock]
            assert http.get(f"{guarded.url}/healthz").status_code == 200  # others still served
            served += 1
            time.sleep(0.5)
        assert not open_, f"{len(open_)} of 40 slow connections still open after 45 s"
        assert served >= 1
    finally:
        for sock, _ in slow:
            sock.close()


def test_an_idle_upload_body_ends_408_and_its_spooled_file_is_removed(guarded):
    spool = Path(guarded.server.log_path).parent / "spool"
    token = guarded.token("yan")["Authorization"]
    part = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * 300_000)
    with _connect(guarded) as sock:
        sock.sendall(f"POST /v1/assets HTTP/1.1\r\nHost: {guarded.url.removeprefix('http://')}\r\n"
                     f"Authorization: {token}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
                     f"Content-Length: 900000\r\n\r\n".encode() + part)
        deadline = time.monotonic() + 20
        while not os.listdir(spool):  # the part is being spooled...
            assert time.monotonic() < deadline, "nothing was spooled"
            time.sleep(0.05)
        sock.settimeout(40)
        answer = b""
        try:
            while b'"}' not in answer:  # ...and then the client goes quiet
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except TimeoutError:
            pass
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"error":"request_timeout"' in answer
    assert os.listdir(spool) == []


def test_idle_connections_from_one_address_are_capped(proxied):
    """Connections with no request under way are few per address: the oldest give way."""
    idle = [_connect(proxied, OTHER_CLIENT) for _ in range(12)]
    transport = httpx.HTTPTransport(local_address=OTHER_CLIENT)
    try:
        with httpx.Client(transport=transport, timeout=30, trust_env=False) as other:
            deadline = time.monotonic() + 30
            # Each new connection may push out the oldest idle one (once it had a moment to speak).
            while sum(map(_closed, idle)) < 12 - 4:
                assert time.monotonic() < deadline, "idle connections were not closed"
                assert other.get(f"{proxied.url}/healthz",
                                 headers={"Connection": "close"}).status_code == 200
                time.sleep(0.2)
        closed = [sock for sock in idle if _closed(sock)]
        assert closed == idle[:len(closed)]  # oldest first
    finally:
        for sock in idle:
            sock.close()


# -- URLs are built from the public base URL, never from Host -----------------------------------


def test_a_forged_host_header_does_not_reach_the_urls_handed_out(http, guarded):
    admin = guarded.token("ivy", "submit,read,admin")
    forged = {**admin, "Host": "evil.example"}
    photo = scene(320, 240, 5).jpegsave_buffer(Q=85)
    answer = http.post(f"{guarded.url}/v1/assets", headers=forged,
                       files={"file": ("a.jpg", photo, "image/jpeg")})
    assert answer.status_code == 202, answer.text
    status_url = answer.json()["status_url"]
    assert status_url.startswith(f"{PUBLIC}/v1/assets/"), status_url
    local = status_url.replace(PUBLIC, guarded.url)
    wait_terminal(http, local, admin)
    asset = http.get(local, headers=forged).json()
    assert asset["renditions"] and all(r["url"].startswith(f"{PUBLIC}/v1/renditions/")
                                       for r in asset["renditions"]), asset["renditions"]
    job = http.post(f"{guarded.url}/v1/jobs", headers=forged,
                    json={"kind": "backfill", "manifest": "catalog:status=failed"})
    assert job.status_code == 202, job.text
    assert job.json()["status_url"].startswith(f"{PUBLIC}/v1/jobs/")


# -- unauthenticated requests are rate limited by address -------------------------------------


def _token_lookups(catalog_url: str) -> int:
    """PostgreSQL's own count of scans of api_tokens, once every backend has reported its own.

    A backend reports its counts at most once a second while busy and 10 s after going idle,
    so the count is read until it stays the same over 11 s.
    """
    def read() -> int:
        with psycopg.connect(_conninfo(catalog_url), autocommit=True) as conn:
            return conn.execute("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0)"
                                " FROM pg_stat_user_tables WHERE relname = 'api_tokens'").fetchone()[0]

    count = read()
    for _ in range(5):
        time.sleep(11)
        count, before = read(), count
        if count == before:
            return count
    raise AssertionError("the count of api_tokens scans never settled")


def test_token_guessing_is_429_after_a_burst_without_catalog_lookups(guarded):
    url = f"{guarded.url}/v1/assets/{uuid.uuid4()}"
    before = _token_lookups(guarded.settings.catalog_url)
    statuses = []
    # From a second address, so 127.0.0.1's budget stays whole for the other tests.
    transport = httpx.HTTPTransport(local_address=OTHER_CLIENT)
    with httpx.Client(transport=transport, timeout=30, trust_env=False) as guesser:
        for i in range(300):
            # A forged X-Forwarded-For changes nothing: no proxy is trusted by default.
            response = guesser.get(url, headers={"Authorization": f"Bearer {_fresh_bad_token()}",
                                                 "X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"})
            statuses.append(response.status_code)
        # Malformed tokens are refused without a lookup, and count against the address too.
        malformed = guesser.get(url, headers={"Authorization": "Bearer nope"})
    assert set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= FAILED_AUTH_BURST + 1, statuses
    _error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert malformed.status_code == 429
    assert _token_lookups(guarded.settings.catalog_url) - before <= FAILED_AUTH_BURST + 1


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(http, proxied):
    url = f"{proxied.url}/v1/assets/{uuid.uuid4()}"
    forwarded = [http.get(url, headers={"Authorization": f"Bearer {_fresh_bad_token()}",
                                        "X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(20)]
    assert forwarded == [401] * 20
    transport = httpx.HTTPTransport(local_address=OTHER_CLIENT)  # not a trusted proxy
    with httpx.Client(transport=transport, timeout=30, trust_env=False) as other:
        direct = [other.get(url, headers={"Authorization": f"Bearer {_fresh_bad_token()}",
                                          "X-Forwarded-For": f"203.0.113.{i}"}).status_code
                  for i in range(20)]
    assert direct.count(401) <= 5 + 1 and direct[-1] == 429, direct
