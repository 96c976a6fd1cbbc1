"""What the HTTP endpoint refuses, and how: tokens, scopes, owners, limits, SSRF.

Every limit and block has a test that shows it holds against a real server
process on loopback (a real socket where it matters: the 413 is answered
before the client has sent a byte of the body).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from catalog import upgrade
from cluster.cli.samples import scene
from cluster.http.upload_store import owner_area
from tests.conftest import make_settings
from tests.services.api_server import (Deployment, settings_env, start_api_server,
                                       wait_terminal)
from tests.services.api_server import assert_error as _error
from tests.services.postgres import scratch_database

MAX_UPLOAD = 1024 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory, clamd, dask_client, pg_server) -> Deployment:
    """A server on PostgreSQL (which refuses what SQLite lets through, such as NUL in text)."""
    root = tmp_path_factory.mktemp("http-auth")
    with scratch_database(pg_server) as catalog_url:
        upgrade(catalog_url)
        settings = make_settings(root / "data", catalog_url, clamd.url)
        server = start_api_server(settings, root, scheduler=dask_client.scheduler.address,
                                  extra_env={"MEDIAFARM_API_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
                                             "MEDIAFARM_API_RATE_LIMIT": "2",
                                             "MEDIAFARM_API_RATE_BURST": "10",
                                             "MEDIAFARM_API_INGEST_PREFIX": _ingest_url(root)
                                             + "/{owner}/"})
        yield Deployment(server, settings)
        server.stop()


def _ingest_url(root: Path) -> str:
    return (root / "ingest").as_uri()


def _ingest(api: Deployment, owner: str, name: str, data: bytes) -> str:
    """Drop a file into ``owner``'s ingest folder (as their own tooling would); its URL."""
    folder = Path(api.settings.data_dir).parent / "ingest" / owner
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return f"{_ingest_url(Path(api.settings.data_dir).parent)}/{owner}/{name}"


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def _jpeg(seed: int) -> bytes:
    return scene(320, 240, seed).jpegsave_buffer(Q=85)


def _any_asset(api: Deployment) -> str:
    return f"{api.url}/v1/assets/{uuid.uuid4()}"


# -- tokens and scopes ------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz",
                                    "Token mf_x"])
def test_no_token_is_401_with_a_bearer_challenge(http, api, header):
    headers = {"Authorization": header} if header is not None else {}
    response = http.get(_any_asset(api), headers=headers)
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", ["mf_not-a-real-token", "x" * 40, "mf_" + "a" * 500])
def test_wrong_token_is_401(http, api, token):
    response = http.get(_any_asset(api), headers={"Authorization": f"Bearer {token}"})
    _error(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def _cli(args: list[str], api: Deployment) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(api.settings)}
    return subprocess.run([sys.executable, "-m", "cluster.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_token_is_printed_once_works_and_stops_working_when_revoked(http, api):
    made = _cli(["token", "create", "--owner", "olga", "--scopes", "read"], api)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("mf_") and made.stdout.count("\n") == 1  # the token, nothing else
    token_id = made.stderr.split()[1]
    listed = _cli(["token", "list"], api)
    assert token_id in listed.stdout and token not in listed.stdout  # never shown again
    headers = {"Authorization": f"Bearer {token}"}
    _error(http.get(_any_asset(api), headers=headers), 404, "not_found")  # authenticated
    assert _cli(["token", "revoke", token_id], api).returncode == 0
    _error(http.get(_any_asset(api), headers=headers), 401, "unauthorized")
    assert _cli(["token", "revoke", token_id], api).returncode == 2


def test_bad_scopes_are_a_usage_error(api):
    made = _cli(["token", "create", "--owner", "olga", "--scopes", "read,root"], api)
    assert made.returncode == 2 and "scopes" in made.stderr and made.stdout == ""


def test_wrong_scope_is_403(http, api):
    reader, submitter = api.token("pat", "read"), api.token("pat", "submit")
    both = api.token("pat", "submit,read")
    _error(http.post(f"{api.url}/v1/assets", headers=reader,
                     files={"file": ("a.jpg", _jpeg(1), "image/jpeg")}), 403, "forbidden")
    _error(http.delete(_any_asset(api), headers=reader), 403, "forbidden")
    _error(http.get(_any_asset(api), headers=submitter), 403, "forbidden")
    _error(http.post(f"{api.url}/v1/jobs", headers=both,
                     json={"kind": "reencode", "recipe": {"presets": []}}), 403, "forbidden")
    _error(http.get(f"{api.url}/v1/jobs/{uuid.uuid4()}", headers=both), 403, "forbidden")


def test_another_owners_asset_is_404_everywhere(http, api):
    alice, mallory = api.token("alice"), api.token("mallory", "submit,read")
    answer = http.post(f"{api.url}/v1/assets", headers=alice,
                       files={"file": ("a.jpg", _jpeg(2), "image/jpeg")})
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], alice)
    assert asset["status"] == "ready"
    alice = api.token("alice")  # a fresh rate-limit bucket after polling
    _error(http.get(answer.json()["status_url"], headers=mallory), 404, "not_found")
    _error(http.delete(answer.json()["status_url"], headers=mallory), 404, "not_found")
    for rendition in asset["renditions"]:
        by_token = rendition["url"].split("?")[0]  # the URL unsigned: the token decides
        assert http.get(by_token, headers=alice).status_code == 200
        _error(http.get(by_token, headers=mallory), 404, "not_found")
    still = http.get(answer.json()["status_url"], headers=alice).json()
    assert still["deleted_at"] is None  # mallory's DELETE did nothing


def test_a_forged_host_header_does_not_reach_the_urls_handed_out(http, api):
    """Without MEDIAFARM_API_PUBLIC_URL, URLs name the address the server is bound to."""
    answer = http.post(f"{api.url}/v1/assets", headers={**api.token("vic"), "Host": "evil.example"},
                       files={"file": ("a.jpg", _jpeg(9), "image/jpeg")})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status_url"].startswith(f"{api.url}/v1/assets/")


# -- limits -----------------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_then_recovers(http, api):
    headers = api.token("quinn", "read")
    answers = [http.get(_any_asset(api), headers=headers) for _ in range(20)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert sum(a.status_code == 404 for a in answers) >= 10  # the burst went through
    _error(limited[0], 429, "rate_limited")
    wait = int(limited[0].headers["retry-after"])
    assert 1 <= wait <= 5
    other = api.token("quinn", "read")  # buckets are per token
    assert http.get(_any_asset(api), headers=other).status_code == 404
    time.sleep(wait)
    assert http.get(_any_asset(api), headers=headers).status_code == 404


def _raw_request(api: Deployment, head: str, body_chunks=(), timeout: float = 10) -> bytes:
    """Send ``head`` (and any body chunks) on a plain socket; return what the server answers."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is already on the way
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
        return answer


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=xyz", "application/json"])
def test_413_comes_from_content_length_before_any_body_byte(api, content_type):
    token = api.token("rita")["Authorization"]
    head = (f"POST /v1/assets HTTP/1.1\r\nHost: {api.url.removeprefix('http://')}\r\n"
            f"Authorization: {token}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {50 * MAX_UPLOAD}\r\n\r\n")
    started = time.monotonic()
    answer = _raw_request(api, head)  # not one byte of the 50 MiB body is ever sent
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"error":"too_large"' in answer
    assert time.monotonic() - started < 5


def test_413_while_streaming_a_body_of_unknown_length(api):
    token = api.token("rita")["Authorization"]
    head = (f"POST /v1/assets HTTP/1.1\r\nHost: {api.url.removeprefix('http://')}\r\n"
            f"Authorization: {token}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n")
    part = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    chunk = b"\xff" * 65536

    def chunks():
        yield b"%x\r\n%s\r\n" % (len(part), part)
        for _ in range(4 * MAX_UPLOAD // len(chunk)):
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)

    answer = _raw_request(api, head, chunks())
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_415_for_part_and_body_types_not_accepted(http, api):
    headers = api.token("sam")
    _error(http.post(f"{api.url}/v1/assets", headers=headers,
                     files={"file": ("notes.txt", b"hello", "text/plain")}),
           415, "unsupported_media_type")
    _error(http.post(f"{api.url}/v1/assets", headers=headers,
                     files={"file": ("page.svg", b"<svg/>", "image/svg+xml")}),
           415, "unsupported_media_type")
    _error(http.post(f"{api.url}/v1/assets", headers={**headers, "Content-Type": "text/plain"},
                     content=b"hello"), 415, "unsupported_media_type")
    _error(http.post(f"{api.url}/v1/uploads", headers=headers,
                     json={"content_type": "application/pdf"}), 415, "unsupported_media_type")


def test_odd_ids_and_nul_characters_are_4xx_never_5xx(http, api):
    headers = api.token("sam", "submit,read,admin")
    for path in ["/v1/assets/%00", "/v1/assets/" + "a" * 36, "/v1/jobs/%00x",
                 "/v1/renditions/%00", "/v1/assets/..%2f..%2fetc"]:
        assert http.get(f"{api.url}{path}", headers=headers).status_code == 404, path
    assert http.delete(f"{api.url}/v1/assets/%00", headers=headers).status_code == 404
    assert http.post(f"{api.url}/v1/uploads/%00/complete", headers=headers).status_code == 404
    recipe = {"name": "n\u0000", "presets": [{"name": "thumb", "width": 10}]}
    _error(http.post(f"{api.url}/v1/jobs", headers=headers,
                     json={"kind": "reencode", "recipe": recipe, "where": ""}), 422)


def test_malformed_bodies_are_4xx_never_5xx(http, api):
    headers = api.token("sam")
    json_headers = {**headers, "Content-Type": "application/json"}
    _error(http.post(f"{api.url}/v1/assets", headers=json_headers, content=b"{"), 400)
    _error(http.post(f"{api.url}/v1/assets", headers=json_headers, content=b"[1]"), 422)
    _error(http.post(f"{api.url}/v1/assets", headers=json_headers,
                     content=b'{"source_uri": 5}'), 422)
    _error(http.post(f"{api.url}/v1/assets",
                     headers={**headers, "Content-Type": "multipart/form-data"},
                     content=b"--x\r\n"), 400, "invalid_multipart")
    _error(http.post(f"{api.url}/v1/assets", headers=headers,
                     files={"other": ("a.jpg", b"x", "image/jpeg")}), 422, "invalid_form")
    _error(http.post(f"{api.url}/v1/assets", headers=headers,
                     files={"file": ("a.jpg", b"", "image/jpeg")}), 422, "empty")
    _error(http.post(f"{api.url}/v1/assets", headers={**headers, "Idempotency-Key": "no spaces"},
                     files={"file": ("a.jpg", b"x", "image/jpeg")}), 422)
    _error(http.post(f"{api.url}/v1/assets", headers=json_headers,
                     content=b'{"source_uri": "file:///x\\u0000"}'), 422)
    _error(http.get(f"{api.url}/v1/nothing-here"), 404, "not_found")
    _error(http.put(f"{api.url}/v1/assets"), 405, "method_not_allowed")


# -- SSRF: sources must lie inside a configured store -----------------------------------------


def test_urls_outside_the_callers_own_places_are_422(http, api):
    headers = api.token("trent")
    ingest = _ingest_url(Path(api.settings.data_dir).parent)
    mine = Path(api.settings.data_dir).parent / "ingest" / "trent"
    # Real files behind each trick, so a refusal is never just "not found".
    _ingest(api, "trent", "ok.jpg", _jpeg(3))
    _ingest(api, "trent-evil", "photo.jpg", _jpeg(4))          # an owner-prefix lookalike
    (mine / "passwd.jpg").unlink(missing_ok=True)
    (mine / "passwd.jpg").symlink_to("/etc/passwd")
    buffer = api.store("buffer")
    buffer.put_at("incoming/ok.jpg", _jpeg(3))
    quarantine = api.store("quarantine")
    quarantine.put_at("held.jpg", _jpeg(5))
    attempts = [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://example.com/photo.jpg",
        "file:///etc/passwd",
        f"{ingest}/trent-evil/photo.jpg",
        f"{ingest}/trent/../trent-evil/photo.jpg",
        f"{ingest}/trent/%2e%2e/trent-evil/photo.jpg",
        f"{ingest}/trent/passwd.jpg",                         # a symlink leading out
        f"{ingest}/trent/*.jpg",
        f"{ingest}/trent/ok.jpg?x=1",
        f"simplecache::{ingest}/trent/ok.jpg",
        f"{buffer.url}/incoming/ok.jpg",                      # in a store, but nobody's upload
        f"{quarantine.url}/held.jpg",                         # a store, but not one to read from
        "s3://bucket/incoming/ok.jpg",
        "memory://incoming/ok.jpg",
        str(mine / "ok.jpg"),                                 # a bare path
        "",
    ]
    for uri in attempts:
        response = http.post(f"{api.url}/v1/assets", headers=api.token("trent"),
                             json={"source_uri": uri})
        _error(response, 422, "source_not_allowed")
    for manifest in ["http://169.254.169.254/manifest.parquet", "file:///etc/*",
                     f"{buffer.url}-evil/*.jpg", f"{buffer.url}/../*"]:
        response = http.post(f"{api.url}/v1/jobs", headers=api.token("trent", "admin"),
                             json={"kind": "backfill", "manifest": manifest})
        _error(response, 422, "source_not_allowed")
    accepted = http.post(f"{api.url}/v1/assets", headers=headers,
                         json={"source_uri": f"{ingest}/trent/ok.jpg"})
    assert accepted.status_code == 202, accepted.text
    assert wait_terminal(http, accepted.json()["status_url"], headers)["status"] == "ready"


def _buffer_objects(api: Deployment) -> set[str]:
    buffer = api.store("buffer")
    return {buffer.fs.unstrip_protocol(p) for p in buffer.fs.find(buffer.root)
            if ".partial-" not in p}


def test_source_uri_names_only_the_callers_own_objects(http, api):
    """Stores are shared and content-addressed: naming another owner's bytes must not work,
    nor tell whether they exist (the answer is the one for an object that never was)."""
    alice = api.token("alice-src")
    photo = _jpeg(6)
    answer = http.post(f"{api.url}/v1/assets", headers=alice,
                       files={"file": ("a.jpg", photo, "image/jpeg")})
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], alice)
    assert asset["status"] == "ready"
    buffer, originals = api.store("buffer"), api.store("originals")
    never = "0" * 64
    theirs = [originals.url_for(asset["sha256"]), originals.url_for(never),
              buffer.url_for(asset["sha256"]), buffer.url_for(never),
              api.store("renditions").url_for(asset["renditions"][0]["sha256"]),
              f"{buffer.url}/uploads/{uuid.uuid4()}",
              _ingest(api, "alice-src", "a.jpg", photo),
              *sorted(_buffer_objects(api))]                 # alice's upload, whatever its name
    answers = [http.post(f"{api.url}/v1/assets", headers=api.token("bob-src"),
                         json={"source_uri": uri}) for uri in theirs]
    assert {(a.status_code, a.text) for a in answers} == {(answers[1].status_code, answers[1].text)}
    _error(answers[1], 422, "source_not_allowed")
    assert api.asset_count("bob-src") == 0
    # Bob's own: his ingest folder, and what he uploaded himself.
    bob = api.token("bob-src")
    own = http.post(f"{api.url}/v1/assets", headers=bob,
                    json={"source_uri": _ingest(api, "bob-src", "b.jpg", photo)})
    assert own.status_code == 202, own.text
    assert wait_terminal(http, own.json()["status_url"], bob)["status"] == "ready"
    missing = http.post(f"{api.url}/v1/assets", headers=bob, json={
        "source_uri": f"{_ingest_url(Path(api.settings.data_dir).parent)}/bob-src/absent.jpg"})
    _error(missing, 422, "source_missing")                  # his to ask about
    before = _buffer_objects(api)
    uploaded = http.post(f"{api.url}/v1/assets", headers=bob,
                         files={"file": ("b.jpg", _jpeg(16), "image/jpeg")})
    assert uploaded.status_code == 202, uploaded.text
    [buffered] = _buffer_objects(api) - before
    again = http.post(f"{api.url}/v1/assets", headers=bob, json={"source_uri": buffered})
    assert again.status_code == 202, again.text
    assert again.json()["id"] == uploaded.json()["id"]      # the same source, the same asset
    refused = http.post(f"{api.url}/v1/assets", headers=api.token("alice-src"),
                        json={"source_uri": buffered})
    assert (refused.status_code, refused.text) == (answers[1].status_code, answers[1].text)


# -- idempotency under concurrency ------------------------------------------------------------


def _together(api: Deployment, owner: str, key: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST /v1/assets once per body, all at once from as many threads (a token each)."""
    barrier = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(i: int, headers: dict, body: dict) -> None:
        with httpx.Client(timeout=120, trust_env=False) as client:
            barrier.wait(timeout=60)
            answers[i] = client.post(f"{api.url}/v1/assets",
                                     headers={**headers, "Idempotency-Key": key}, **body)

    threads = [threading.Thread(target=send, args=(i, api.token(owner), body))
               for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert all(answers), "a request never came back"
    return answers


def test_one_key_raced_by_ten_different_uploads_makes_one_asset(api):
    files = [{"files": {"file": ("r.jpg", _jpeg(100 + i), "image/jpeg")}} for i in range(10)]
    answers = _together(api, "racer", "race-1", files)
    assert sorted(a.status_code for a in answers) == [202] + [409] * 9, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            _error(answer, 409, "idempotency_key_reused")
    assert api.asset_count("racer") == 1                    # a 409 submitted nothing


def test_the_same_upload_sent_ten_times_at_once_is_one_asset(http, api):
    photo = {"files": {"file": ("t.jpg", _jpeg(120), "image/jpeg")}}
    answers = _together(api, "twin", "twin-1", [photo] * 10)
    accepted = [a for a in answers if a.status_code == 202]
    assert accepted and len({a.text for a in accepted}) == 1
    for answer in answers:
        if answer.status_code != 202:
            _error(answer, 409, "idempotency_key_in_progress")
            assert int(answer.headers["retry-after"]) >= 1
    assert api.asset_count("twin") == 1
    retry = http.post(f"{api.url}/v1/assets", headers={**api.token("twin"),
                                                       "Idempotency-Key": "twin-1"}, **photo)
    assert retry.status_code == 202 and retry.json() == accepted[0].json()


def test_a_failed_request_frees_its_idempotency_key(http, api):
    headers = {**api.token("phil"), "Idempotency-Key": "phil-1"}
    ingest = _ingest_url(Path(api.settings.data_dir).parent)
    _error(http.post(f"{api.url}/v1/assets", headers=headers,
                     json={"source_uri": f"{ingest}/phil/absent.jpg"}), 422, "source_missing")
    other = http.post(f"{api.url}/v1/assets", headers=headers,
                      json={"source_uri": _ingest(api, "phil", "p.jpg", _jpeg(9))})
    assert other.status_code == 202, other.text


def test_a_body_just_under_the_limit_streams_through_intact(http, api):
    headers = api.token("uma")
    data = os.urandom(MAX_UPLOAD - 4096)  # many chunks; hashed and spooled as they arrive
    answer = http.post(f"{api.url}/v1/assets", headers=headers,
                       files={"file": ("noise.jpg", data, "image/jpeg")})
    assert answer.status_code == 202, answer.text
    digest = hashlib.sha256(data).hexdigest()
    assert owner_area(api.store("buffer"), "uma").get(digest) == data
    asset = wait_terminal(http, answer.json()["status_url"], headers)
    assert (asset["status"], asset["reason"]) == ("rejected", "unsupported_type")  # bytes decide


# -- readiness --------------------------------------------------------------------------------


def test_readyz_is_503_naming_the_dependency_that_does_not_answer(http, tmp_path, dask_client):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'catalog.sqlite'}",
                             f"tcp://127.0.0.1:{dead}")
    server = start_api_server(settings, tmp_path, scheduler=dask_client.scheduler.address)
    try:
        assert http.get(f"{server.url}/healthz").status_code == 200
        ready = http.get(f"{server.url}/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unready"
        assert body["checks"]["catalog"] == "ok" and body["checks"]["scheduler"] == "ok"
        assert body["checks"]["clamd"] != "ok"
    finally:
        server.stop()
