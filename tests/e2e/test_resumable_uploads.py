"""Resumable uploads (tus 1.0) and S3 multipart presigned uploads end to end: a real
``mediafarm serve``, real tus clients, plain HTTP PUTs to presigned part URLs.

tuspy (and tus-js-client in Node, where node is installed) upload a real video over
loopback, are killed halfway, resume from the offset the server reports, and the asset
ends ``ready``: once with local stores and a SQLite catalog, once with the buffer on a
moto S3 endpoint and PostgreSQL. Every way a client can send bad input is refused with
the protocol's status, and nothing of it is kept.

The video (~290 MiB) is over the image limit and streamed through the stages by reference
(``cluster/source_pass.py``), never held whole in a worker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from catalog import connect, upgrade
from catalog.models import TusUpload, Upload
from catalog.repository import utcnow
from cluster.cli.samples import scene
from cluster.http.upload_store import owner_area
from tests.conftest import make_settings, s3_store
from tests.services.api_server import (Deployment, assert_error, settings_env,
                                       sqlite_deployment, start_api_server, wait_terminal)
from tests.services.cli import mediafarm
from tests.services.postgres import scratch_database
from tests.services.throttle import ThrottledProxy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1024 * 1024
CLIENT = Path(__file__).parent / "tus_clients"
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A real, decodable H.264 video of ~290 MiB: 360p noise, lossless, 28 s (~88 Mb/s, under
    the farm's bit-rate limit)."""
    path = tmp_path_factory.mktemp("tus-media") / "noise.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-frames:v", "700",
            "-vf", "noise=alls=60:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
            "-pix_fmt", "yuv420p", str(path))
    assert 250 * MiB < path.stat().st_size < 340 * MiB, path.stat().st_size
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real video of ~20 MiB: three 8 MiB parts of an S3 multipart upload."""
    path = tmp_path_factory.mktemp("tus-clip") / "clip.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-frames:v", "48",
            "-vf", "noise=alls=60:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
            "-pix_fmt", "yuv420p", str(path))
    assert 16 * MiB < path.stat().st_size < 24 * MiB, path.stat().st_size
    return path


def _jpeg(seed: int) -> bytes:
    return scene(640, 480, seed).jpegsave_buffer(Q=85)


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def local(tmp_path_factory, clamd, dask_client) -> Deployment:
    with sqlite_deployment(tmp_path_factory.mktemp("tus-local"), clamd.url,
                           dask_client.scheduler.address,
                           {"MEDIAFARM_API_RATE_LIMIT": "1000", "MEDIAFARM_API_RATE_BURST": "1000",
                            "MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL": "0"}) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory, clamd, pg_server, s3_endpoint) -> Deployment:
    """The buffer, originals and renditions on moto S3; PostgreSQL; the server's own workers."""
    root = tmp_path_factory.mktemp("tus-s3")
    stores = {name: s3_store(s3_endpoint, name) for name in ("buffer", "originals", "renditions")}
    fsspec_s3 = {k: v for k, v in stores["buffer"].options.items() if k != "skip_instance_cache"}
    with scratch_database(pg_server) as catalog_url:
        upgrade(catalog_url)
        settings = make_settings(root / "data", catalog_url, clamd.url, stores)
        server = start_api_server(settings, root, workers=1, extra_env={
            "FSSPEC_S3": json.dumps(fsspec_s3), "MEDIAFARM_API_RATE_LIMIT": "1000",
            "MEDIAFARM_API_RATE_BURST": "1000", "MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL": "0"})
        yield Deployment(server, settings)
        server.stop()


# -- helpers ----------------------------------------------------------------------------------


def _metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def _create(http: httpx.Client, deployment: Deployment, headers: dict, length: int,
            **extra) -> str:
    made = http.post(f"{deployment.url}/v1/tus", headers={
        **headers, **TUS, "Upload-Length": str(length),
        "Upload-Metadata": _metadata(filename="photo.jpg", filetype="image/jpeg"), **extra})
    assert made.status_code == 201, made.text
    assert made.headers["tus-resumable"] == "1.0.0" and made.headers["upload-expires"]
    return made.headers["location"]


def _patch(http: httpx.Client, url: str, headers: dict, offset: int, data: bytes,
           **extra) -> httpx.Response:
    return http.patch(url, content=data, headers={
        **headers, **TUS, "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream", **extra})


def _offset(http: httpx.Client, url: str, headers: dict) -> int:
    head = http.head(url, headers={**headers, **TUS})
    assert head.status_code == 200, head.status_code
    return int(head.headers["upload-offset"])


def _row(deployment: Deployment, url: str) -> dict:
    upload_id = url.rsplit("/", 1)[-1]
    with connect(deployment.settings.catalog_url).connect() as conn:
        return dict(conn.execute(select(TusUpload.__table__)
                                 .where(TusUpload.id == upload_id)).first()._mapping)


def _send_partially(url: str, headers: dict, offset: int, declared: int, data: bytes) -> None:
    """A PATCH announcing ``declared`` bytes that sends ``data`` and hangs up: a dropped link."""
    parts = urlsplit(url)
    head = [f"PATCH {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
            "Content-Type: application/offset+octet-stream", f"Content-Length: {declared}",
            f"Upload-Offset: {offset}", "Tus-Resumable: 1.0.0",
            *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        time.sleep(0.5)


def _settled_offset(http: httpx.Client, url: str, headers: dict, expected: int) -> int:
    """The offset once the server has taken in what a dropped PATCH sent (it notices the
    hang-up a moment after the client)."""
    deadline = time.monotonic() + 15
    while (offset := _offset(http, url, headers)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return offset


TUSPY = """
import json, sys
from urllib.parse import parse_qs, urlsplit
from tusclient import client
url, token, path, chunk, resume, checksum, via = sys.argv[1:8]
tus = client.TusClient(url, headers={"Authorization": "Bearer " + token})
uploader = tus.uploader(path, url=resume or None, chunk_size=int(chunk),
                        upload_checksum=checksum == "sha1",
                        metadata={"filename": "noise.mp4", "filetype": "video/mp4"})
if not uploader.url:
    uploader.set_url(uploader.create_url())
print(json.dumps({"url": uploader.url, "offset": uploader.offset}), flush=True)
if via:  # the bytes go through the slow link
    uploader.url = via + urlsplit(uploader.url).path
uploader.upload()
print(json.dumps({"done": uploader.offset}), flush=True)
"""


def _tuspy(deployment: Deployment, token: str, path: Path, chunk: int, resume: str = "",
           checksum: bool = False, via: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TUSPY, f"{deployment.url}/v1/tus", token,
                             str(path), str(chunk), resume, "sha1" if checksum else "", via],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=NO_PROXY_ENV)


def _kill_halfway(http: httpx.Client, deployment: Deployment, token: str, path: Path,
                  chunk: int, checksum: bool) -> tuple[str, int]:
    """Upload through a slow link and kill the client once the server has a third of the file."""
    headers = {"Authorization": f"Bearer {token}"}
    length = path.stat().st_size
    with ThrottledProxy(deployment.url, rate=60 * MiB) as link:
        client = _tuspy(deployment, token, path, chunk, checksum=checksum, via=link.url)
        started = json.loads(client.stdout.readline())
        assert started["offset"] == 0
        url = started["url"]
        deadline = time.monotonic() + 120
        while _offset(http, url, headers) < length // 3:
            assert client.poll() is None, client.stderr.read()
            assert time.monotonic() < deadline, "the upload made no progress"
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        client.wait()
    time.sleep(1)  # the server notices the hang-up and records what it got
    offset = _offset(http, url, headers)
    assert length // 3 <= offset < length, offset
    return url, offset


def _resume_to_ready(http: httpx.Client, deployment: Deployment, token: str, path: Path,
                     url: str, offset: int, chunk: int, checksum: bool = False) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    client = _tuspy(deployment, token, path, chunk, resume=url, checksum=checksum)
    out, err = client.communicate(timeout=300)
    assert client.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"url": url, "offset": offset}  # resumed where the server said
    assert lines[-1] == {"done": path.stat().st_size}
    state = http.get(url, headers=headers).json()
    assert state["complete"] and state["offset"] == state["length"] == path.stat().st_size
    asset = wait_terminal(http, state["asset"]["status_url"], headers, timeout=600)
    assert asset["status"] == "ready", asset
    assert asset["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    head = http.head(url, headers={**headers, **TUS})
    assert head.headers["mediafarm-asset"] == state["asset"]["status_url"]
    return asset


def _token(deployment: Deployment, owner: str) -> str:
    return deployment.token(owner)["Authorization"].removeprefix("Bearer ")


# -- tuspy, killed halfway --------------------------------------------------------------------


def test_tuspy_killed_halfway_resumes_and_the_video_ends_ready(http, local, video):
    token = _token(local, "tuspy")
    headers = {"Authorization": f"Bearer {token}"}
    # One PATCH for the whole file, as tuspy does by default (no checksum): the kill lands
    # mid-body, and the server keeps what arrived.
    url, offset = _kill_halfway(http, local, token, video, chunk=1 << 40, checksum=False)
    asset = _resume_to_ready(http, local, token, video, url, offset, chunk=1 << 40)
    assert asset["renditions"] and local.asset_count("tuspy") == 1


def test_tuspy_killed_halfway_resumes_on_s3(http, on_s3, video):
    token = _token(on_s3, "tuspy-s3")
    headers = {"Authorization": f"Bearer {token}"}
    # 5 MiB chunks with sha1 checksums: each is checked whole, and most leave a tail
    # that waits in its sidecar object for the next to fill an 8 MiB part.
    url, offset = _kill_halfway(http, on_s3, token, video, chunk=5 * MiB, checksum=True)
    row = _row(on_s3, url)
    assert sum(size for _, _, size in row["parts"]) + row["tail_size"] == offset
    assert all(size == row["part_size"] for _, _, size in row["parts"])
    _resume_to_ready(http, on_s3, token, video, url, offset, chunk=5 * MiB, checksum=True)
    assert on_s3.asset_count("tuspy-s3") == 1
    buffer = on_s3.store("buffer")
    path = buffer.key_at(_row(on_s3, url)["key"])
    assert buffer.fs.size(path) == video.stat().st_size
    assert not buffer.fs.exists(f"{path}.tail")


def test_tus_js_client_in_node_resumes_to_ready(http, local, clip, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/bootstrap.sh installs nodejs and npm)")
    modules = CLIENT / "node_modules" / "tus-js-client"
    if not modules.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(CLIENT)],
                       check=True, capture_output=True, timeout=300)
    token = _token(local, "node")
    headers = {"Authorization": f"Bearer {token}"}
    size = clip.stat().st_size
    # First run: stop after two 4 MiB chunks (the client aborts; the upload stays).
    first = subprocess.run([node, str(CLIENT / "upload.mjs"), f"{local.url}/v1/tus", token,
                            str(clip), str(4 * MiB), "", str(8 * MiB)],
                           capture_output=True, text=True, timeout=120, env=NO_PROXY_ENV)
    assert first.returncode == 0, first.stderr
    started, *_, stopped = [json.loads(line) for line in first.stdout.splitlines()]
    assert stopped == {"stopped": 8 * MiB}
    assert _offset(http, started["url"], headers) == 8 * MiB
    second = subprocess.run([node, str(CLIENT / "upload.mjs"), f"{local.url}/v1/tus", token,
                             str(clip), str(4 * MiB), started["url"], "0"],
                            capture_output=True, text=True, timeout=120, env=NO_PROXY_ENV)
    assert second.returncode == 0, second.stderr
    lines = [json.loads(line) for line in second.stdout.splitlines()]
    assert lines[0] == {"url": started["url"]}
    assert lines[1] == {"resumed_from": 8 * MiB} and lines[-1] == {"done": size}
    state = http.get(started["url"], headers=headers).json()
    asset = wait_terminal(http, state["asset"]["status_url"], headers, timeout=300)
    assert asset["status"] == "ready", asset
    assert asset["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()


# -- the protocol -----------------------------------------------------------------------------


def test_options_advertise_the_server_and_every_answer_says_tus_resumable(http, local):
    alice = local.token("alice")
    options = http.options(f"{local.url}/v1/tus", headers=alice)
    assert options.status_code == 204
    assert options.headers["tus-version"] == "1.0.0"
    assert set(options.headers["tus-extension"].split(",")) == {
        "creation", "creation-with-upload", "termination", "checksum", "expiration"}
    assert {"sha1", "sha256"} <= set(options.headers["tus-checksum-algorithm"].split(","))
    assert int(options.headers["tus-max-size"]) >= 200 * MiB
    assert "access-control-allow-origin" not in options.headers  # no CORS
    refused = http.post(f"{local.url}/v1/tus", headers={**alice, "Upload-Length": "10"})
    assert_error(refused, 412, "unsupported_version")
    assert refused.headers["tus-version"] == "1.0.0"
    for answer in (refused, http.post(f"{local.url}/v1/tus", headers=TUS),
                   http.head(f"{local.url}/v1/tus/not-an-id", headers={**alice, **TUS})):
        assert answer.headers["tus-resumable"] == "1.0.0", answer.status_code


def test_create_head_patch_and_the_asset_it_becomes_exactly_once(http, local):
    bob = local.token("bob")
    photo = _jpeg(1)
    url = _create(http, local, bob, len(photo))
    assert url.startswith(f"{local.url}/v1/tus/")
    head = http.head(url, headers={**bob, **TUS})
    assert head.status_code == 200 and head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(photo))
    assert head.headers["cache-control"] == "no-store"
    assert "filename" in head.headers["upload-metadata"]
    first = _patch(http, url, bob, 0, photo[:1000])
    assert first.status_code == 204 and first.headers["upload-offset"] == "1000"
    assert "mediafarm-asset" not in first.headers
    digest = base64.b64encode(hashlib.sha256(photo[1000:]).digest()).decode()
    last = _patch(http, url, bob, 1000, photo[1000:], **{"Upload-Checksum": f"sha256 {digest}"})
    assert last.status_code == 204, last.text
    assert last.headers["upload-offset"] == str(len(photo))
    status_url = last.headers["mediafarm-asset"]
    asset = wait_terminal(http, status_url, bob)
    assert asset["status"] == "ready" and asset["sha256"] == hashlib.sha256(photo).hexdigest()
    # Asked again in every way, it is the same one asset.
    assert http.head(url, headers={**bob, **TUS}).headers["mediafarm-asset"] == status_url
    state = http.get(url, headers=bob).json()
    assert state["complete"] and state["asset"]["status_url"] == status_url
    assert state["metadata"] == {"filename": "photo.jpg", "filetype": "image/jpeg"}
    again = _patch(http, url, bob, len(photo), b"x")
    assert_error(again, 409, "upload_complete")
    assert local.asset_count("bob") == 1
    # The finished file is its owner's: the same source named again is the same asset.
    source = owner_area(local.store("buffer"), "bob").key_at(f"tus/{state['id']}")
    assert Path(source).read_bytes() == photo


def test_creation_with_upload_and_an_idempotency_key(http, local):
    carol = local.token("carol")
    photo = _jpeg(2)
    made = http.post(f"{local.url}/v1/tus", content=photo[:5000], headers={
        **carol, **TUS, "Upload-Length": str(len(photo)), "Idempotency-Key": "tus-2",
        "Content-Type": "application/offset+octet-stream"})
    assert made.status_code == 201, made.text
    assert made.headers["upload-offset"] == "5000"
    again = http.post(f"{local.url}/v1/tus", content=photo[:5000], headers={
        **carol, **TUS, "Upload-Length": str(len(photo)), "Idempotency-Key": "tus-2",
        "Content-Type": "application/offset+octet-stream"})
    assert again.status_code == 201 and again.headers["location"] == made.headers["location"]
    assert again.headers["upload-offset"] == "5000"  # the retry's body was not taken twice
    other = http.post(f"{local.url}/v1/tus", headers={
        **carol, **TUS, "Upload-Length": "99", "Idempotency-Key": "tus-2"})
    assert_error(other, 409, "idempotency_key_reused")
    done = _patch(http, made.headers["location"], carol, 5000, photo[5000:])
    assert done.status_code == 204 and "mediafarm-asset" in done.headers
    assert wait_terminal(http, done.headers["mediafarm-asset"], carol)["status"] == "ready"


def test_a_dropped_connection_keeps_what_arrived(http, local):
    dave = local.token("dave")
    photo = _jpeg(3)
    url = _create(http, local, dave, len(photo))
    _send_partially(url, dave, 0, len(photo), photo[:20_000])
    assert _settled_offset(http, url, dave, 20_000) == 20_000
    done = _patch(http, url, dave, 20_000, photo[20_000:])
    assert done.status_code == 204
    asset = wait_terminal(http, done.headers["mediafarm-asset"], dave)
    assert asset["sha256"] == hashlib.sha256(photo).hexdigest()


def test_a_dropped_connection_on_s3_keeps_what_arrived_past_a_part(http, on_s3, clip):
    erin = on_s3.token("erin-s3")
    data = clip.read_bytes()
    url = _create(http, on_s3, erin, len(data), **{"Upload-Metadata": ""})
    sent = 8 * MiB + 3 * MiB  # one part, and a tail
    _send_partially(url, erin, 0, len(data), data[:sent])
    assert _settled_offset(http, url, erin, sent) == sent
    row = _row(on_s3, url)
    assert [size for _, _, size in row["parts"]] == [8 * MiB] and row["tail_size"] == 3 * MiB
    done = _patch(http, url, erin, sent, data[sent:])
    assert done.status_code == 204, done.text
    asset = wait_terminal(http, done.headers["mediafarm-asset"], erin, timeout=300)
    assert asset["status"] == "ready" and asset["sha256"] == hashlib.sha256(data).hexdigest()


# -- bad input --------------------------------------------------------------------------------


def _file_size(deployment: Deployment, url: str) -> int:
    return Path(deployment.store("buffer").key_at(_row(deployment, url)["key"])).stat().st_size


def test_another_owners_token_finds_nothing_and_changes_nothing(http, local):
    fred, mallory = local.token("fred"), local.token("mallory")
    photo = _jpeg(4)
    url = _create(http, local, fred, len(photo))
    assert _patch(http, url, fred, 0, photo[:100]).status_code == 204
    nobody = f"{local.url}/v1/tus/00000000-0000-4000-8000-000000000000"
    for target in (url, nobody):
        answers = [http.head(target, headers={**mallory, **TUS}),
                   _patch(http, target, mallory, 100, photo[100:]),
                   http.delete(target, headers={**mallory, **TUS}),
                   http.get(target, headers=mallory)]
        assert [a.status_code for a in answers] == [404] * 4
        for answer in answers[1:]:
            assert answer.json() == {"error": "not_found", "message": "there is no such upload"}
    assert _offset(http, url, fred) == 100 and _file_size(local, url) == 100
    assert local.asset_count("mallory") == 0


def test_lying_about_the_length_is_refused_and_nothing_is_kept(http, local):
    gail = local.token("gail")
    over = http.post(f"{local.url}/v1/tus", headers={**gail, **TUS,
                                                      "Upload-Length": str(10**12)})
    assert_error(over, 413, "too_large")
    assert_error(http.post(f"{local.url}/v1/tus", headers={**gail, **TUS}), 400,
                 "invalid_upload_length")
    assert_error(http.post(f"{local.url}/v1/tus", headers={
        **gail, **TUS, "Upload-Length": "10", "Upload-Defer-Length": "1"}), 400)
    assert_error(http.post(f"{local.url}/v1/tus", headers={
        **gail, **TUS, "Upload-Length": "10",
        "Upload-Metadata": _metadata(filetype="application/x-msdownload")}), 415)
    photo = _jpeg(5)
    url = _create(http, local, gail, 1000)
    assert _patch(http, url, gail, 0, photo[:400]).status_code == 204
    # Announced past the length: refused before a byte is read.
    assert_error(_patch(http, url, gail, 400, photo[400:1200]), 413, "past_length")
    # Sent past it without announcing (a chunked body): refused whole when it runs over.
    chunked = http.patch(url, content=iter([photo[400:900], photo[900:1500]]), headers={
        **gail, **TUS, "Upload-Offset": "400", "Content-Type": "application/offset+octet-stream"})
    assert_error(chunked, 413, "past_length")
    # A PATCH that says another length than the upload's.
    assert_error(_patch(http, url, gail, 400, photo[400:500], **{"Upload-Length": "2000"}), 400,
                 "length_mismatch")
    assert _offset(http, url, gail) == 400 and _file_size(local, url) == 400
    assert local.asset_count("gail") == 0


def test_a_wrong_checksum_is_460_and_the_chunk_is_discarded(http, local):
    hal = local.token("hal")
    photo = _jpeg(6)
    url = _create(http, local, hal, len(photo))
    wrong = base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
    answer = _patch(http, url, hal, 0, photo, **{"Upload-Checksum": f"sha1 {wrong}"})
    assert_error(answer, 460, "checksum_mismatch")
    assert _offset(http, url, hal) == 0 and _file_size(local, url) == 0
    assert_error(_patch(http, url, hal, 0, photo, **{"Upload-Checksum": f"md4 {wrong}"}), 400,
                 "unsupported_checksum")
    assert_error(_patch(http, url, hal, 0, photo, **{"Upload-Checksum": "sha1 !!"}), 400)
    right = base64.b64encode(hashlib.sha1(photo).digest()).decode()
    done = _patch(http, url, hal, 0, photo, **{"Upload-Checksum": f"sha1 {right}"})
    assert done.status_code == 204 and "mediafarm-asset" in done.headers
    assert local.asset_count("hal") == 1


def test_a_wrong_offset_is_409_and_a_wrong_content_type_415(http, local):
    ivy = local.token("ivy")
    photo = _jpeg(7)
    url = _create(http, local, ivy, len(photo))
    assert _patch(http, url, ivy, 0, photo[:300]).status_code == 204
    for offset in (0, 200, 301):
        answer = _patch(http, url, ivy, offset, photo[offset:offset + 50])
        assert_error(answer, 409, "offset_mismatch")
        assert answer.headers["upload-offset"] == "300"
    wrong_type = http.patch(url, content=photo[300:], headers={
        **ivy, **TUS, "Upload-Offset": "300", "Content-Type": "application/octet-stream"})
    assert_error(wrong_type, 415)
    assert_error(http.patch(url, content=b"", headers={
        **ivy, "Upload-Offset": "300", "Content-Type": "application/offset+octet-stream"}), 412)
    assert _offset(http, url, ivy) == 300 and _file_size(local, url) == 300


def test_termination_drops_the_upload(http, local):
    jan = local.token("jan")
    url = _create(http, local, jan, 1000)
    assert _patch(http, url, jan, 0, b"\xff" * 10).status_code == 204
    path = Path(local.store("buffer").key_at(_row(local, url)["key"]))
    assert http.delete(url, headers={**jan, **TUS}).status_code == 204
    assert not path.exists()
    assert http.head(url, headers={**jan, **TUS}).status_code == 404
    assert_error(_patch(http, url, jan, 10, b"x"), 404)


def test_a_full_disk_fails_the_upload_not_the_server(http, local):
    kim = local.token("kim")
    photo = _jpeg(8)
    url = _create(http, local, kim, len(photo))
    path = Path(local.store("buffer").key_at(_row(local, url)["key"]))
    path.unlink()
    path.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    answer = _patch(http, url, kim, 0, photo)
    assert_error(answer, 507, "insufficient_storage")
    assert _offset(http, url, kim) == 0
    assert http.get(f"{local.url}/healthz").status_code == 200
    path.unlink()
    path.touch()  # space again: the same upload resumes
    done = _patch(http, url, kim, 0, photo)
    assert done.status_code == 204
    assert wait_terminal(http, done.headers["mediafarm-asset"], kim)["status"] == "ready"


def test_expired_uploads_are_cleaned_up(http, local):
    lee = local.token("lee")
    url = _create(http, local, lee, 1000)
    assert _patch(http, url, lee, 0, b"\xff" * 10).status_code == 204
    path = Path(local.store("buffer").key_at(_row(local, url)["key"]))
    with connect(local.settings.catalog_url).begin() as conn:
        conn.execute(update(TusUpload.__table__).where(TusUpload.id == url.rsplit("/", 1)[-1])
                     .values(expires_at=utcnow()))
    assert http.head(url, headers={**lee, **TUS}).status_code == 404  # expired: gone to clients
    env = {**NO_PROXY_ENV, **settings_env(local.settings)}
    cleaned = mediafarm(["uploads", "clean"], env, timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert json.loads(cleaned.stdout)["tus_expired"] >= 1
    assert not path.exists() and _row(local, url)["status"] == "expired"


def test_the_offset_survives_a_server_restart(http, tmp_path, clamd, dask_client):
    photo = _jpeg(9)
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'c.sqlite'}",
                             clamd.url)
    upgrade(settings.catalog_url)
    server = start_api_server(settings, tmp_path, scheduler=dask_client.scheduler.address)
    try:
        deployment = Deployment(server, settings)
        mo = deployment.token("mo")
        url = _create(http, deployment, mo, len(photo))
        _send_partially(url, mo, 0, len(photo), photo[:7000])
        assert _settled_offset(http, url, mo, 7000) == 7000
    finally:
        server.stop()
    server = start_api_server(settings, tmp_path, scheduler=dask_client.scheduler.address)
    url = server.url + urlsplit(url).path  # the new server listens on another port
    try:
        assert _offset(http, url, mo) == 7000
        done = _patch(http, url, mo, 7000, photo[7000:])
        assert done.status_code == 204
        assert wait_terminal(http, done.headers["mediafarm-asset"], mo)["status"] == "ready"
    finally:
        server.stop()


# -- S3 multipart presigned uploads -----------------------------------------------------------


def _multipart(http: httpx.Client, deployment: Deployment, headers: dict, size: int) -> dict:
    made = http.post(f"{deployment.url}/v1/uploads", headers=headers,
                     json={"multipart": True, "size": size, "content_type": "video/mp4"})
    assert made.status_code == 201, made.text
    return made.json()


def _put_parts(http: httpx.Client, upload: dict, data: bytes) -> list[dict]:
    sent = []
    for part in upload["parts"]:
        start = (part["number"] - 1) * upload["part_size"]
        put = http.put(part["url"], content=data[start:start + part["size"]])
        assert put.status_code == 200, put.text
        sent.append({"number": part["number"], "etag": put.headers["etag"]})
    return sent


def _multipart_uploads(deployment: Deployment) -> set[str]:
    buffer = deployment.store("buffer")
    bucket = buffer.root.split("/")[0]
    listed = buffer.fs.call_s3("list_multipart_uploads", Bucket=bucket)
    return {u["UploadId"] for u in listed.get("Uploads", [])}


def _multipart_id(deployment: Deployment, upload_id: str) -> str:
    with connect(deployment.settings.catalog_url).connect() as conn:
        return conn.execute(select(Upload.multipart_id).where(Upload.id == upload_id)).scalar_one()


def test_multipart_presigned_upload_of_three_parts_ends_ready(http, on_s3, clip):
    nan = on_s3.token("nan")
    data = clip.read_bytes()
    upload = _multipart(http, on_s3, nan, len(data))
    assert upload["part_count"] == 3 and upload["part_size"] == 8 * MiB
    assert [p["size"] for p in upload["parts"]] == [8 * MiB, 8 * MiB, len(data) - 16 * MiB]
    for part in upload["parts"]:
        query = parse_qs(urlsplit(part["url"]).query)
        assert "content-length" in query["X-Amz-SignedHeaders"][0].split(";")
        assert query["partNumber"] == [str(part["number"])]
    again = http.post(upload["parts_url"], headers=nan, json={"numbers": [2]})
    assert again.status_code == 200 and [p["number"] for p in again.json()["parts"]] == [2]
    assert_error(http.post(upload["parts_url"], headers=nan, json={"numbers": [4]}), 422)
    sent = _put_parts(http, upload, data)
    # A part list that does not match what S3 holds is refused, and the upload stays.
    wrong_etag = [sent[0], {"number": 2, "etag": '"' + "0" * 32 + '"'}, sent[2]]
    for parts in (sent[:2], [sent[1], sent[0], sent[2]], wrong_etag, [*sent, sent[2]]):
        refused = http.post(upload["complete_url"], headers=nan, json={"parts": parts})
        assert_error(refused, 409, "parts_mismatch")
    assert_error(http.post(upload["complete_url"], headers=nan), 422)
    assert http.post(upload["complete_url"], headers=on_s3.token("oscar"),
                     json={"parts": sent}).status_code == 404
    done = http.post(upload["complete_url"], headers=nan, json={"parts": sent})
    assert done.status_code == 202, done.text
    assert http.post(upload["complete_url"], headers=nan, json={"parts": sent}).json() == done.json()
    asset = wait_terminal(http, done.json()["status_url"], nan, timeout=300)
    assert asset["status"] == "ready" and asset["sha256"] == hashlib.sha256(data).hexdigest()
    assert on_s3.asset_count("nan") == 1
    assert _multipart_id(on_s3, upload["id"]) not in _multipart_uploads(on_s3)


def test_a_multipart_part_over_its_signed_length_is_refused(http, on_s3, clip):
    pat = on_s3.token("pat")
    data = clip.read_bytes()
    upload = _multipart(http, on_s3, pat, len(data))
    sent = _put_parts(http, upload, data)
    # moto does not check signatures, so it takes a part S3 would refuse (403): the farm must not.
    last = upload["parts"][-1]
    put = http.put(last["url"], content=data[-last["size"]:] + b"\0" * 1024)
    assert put.status_code == 200
    sent[-1] = {"number": last["number"], "etag": put.headers["etag"]}
    refused = http.post(upload["complete_url"], headers=pat, json={"parts": sent})
    assert_error(refused, 413, "too_large")
    assert _multipart_id(on_s3, upload["id"]) not in _multipart_uploads(on_s3)  # aborted
    assert on_s3.asset_count("pat") == 0


def test_abandoned_multipart_uploads_are_aborted_by_the_clean_up(http, on_s3, clip):
    quinn = on_s3.token("quinn")
    data = clip.read_bytes()
    upload = _multipart(http, on_s3, quinn, len(data))
    first = upload["parts"][0]
    assert http.put(first["url"], content=data[:first["size"]]).status_code == 200
    abandoned = _multipart_id(on_s3, upload["id"])
    with connect(on_s3.settings.catalog_url).begin() as conn:
        conn.execute(update(Upload.__table__).where(Upload.id == upload["id"])
                     .values(expires_at=utcnow()))
    # And one no row names: a server that died between starting it and recording it.
    buffer = on_s3.store("buffer")
    bucket, key, _ = buffer.fs.split_path(buffer.key_at("owners/x/uploads/orphan"))
    orphan = buffer.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    kept = _multipart(http, on_s3, quinn, len(data))  # still in time: kept
    assert {abandoned, orphan, _multipart_id(on_s3, kept["id"])} <= _multipart_uploads(on_s3)
    env = {**NO_PROXY_ENV, **settings_env(on_s3.settings), "MEDIAFARM_API_UPLOAD_EXPIRES": "0"}
    cleaned = mediafarm(["uploads", "clean"], env, timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    counts = json.loads(cleaned.stdout)
    assert counts["multipart_aborted"] >= 1 and counts["orphans_aborted"] >= 1
    left = _multipart_uploads(on_s3)
    assert abandoned not in left and orphan not in left
    assert _multipart_id(on_s3, kept["id"]) in left
    assert_error(http.post(upload["complete_url"], headers=quinn,
                           json={"parts": [{"number": 1, "etag": "x"}]}), 404)


def test_multipart_uploads_need_an_object_store(http, local):
    answer = http.post(f"{local.url}/v1/uploads", headers=local.token("rae"),
                       json={"multipart": True, "size": 100})
    assert_error(answer, 409, "presign_unavailable")
