"""Delivery from a live server on local stores: signed URLs (expiry, tampering, delete),
ETag and 304, range requests (206, 416), and an HLS/DASH package fetched through signed
URLs only, its segments decoded."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import av
import httpx
import pytest

from catalog import upgrade
from cluster.cli.samples import scene
from cluster.http.signed_urls import signed_query
from pipelines.optimize.dash import MPD_NAMESPACE
from tests.conftest import make_settings
from tests.services.api_server import Deployment, start_api_server, wait_terminal
from tests.services.api_server import assert_error as _error

RECIPE = """\
name: delivery
presets:
  - {name: thumb, width: 150, height: 150, fit: cover}
video:
  - {name: h264, codec: libx264, heights: [180], crf: 30, speed: ultrafast,
     audio_codec: aac, container: mp4, hls: true}
"""
FPS, SECONDS = 25, 3


@pytest.fixture(scope="module")
def served(tmp_path_factory, clamd, dask_client) -> Deployment:
    root = tmp_path_factory.mktemp("delivery")
    settings = make_settings(root / "data", f"sqlite:///{root / 'data' / 'catalog.sqlite'}",
                             clamd.url)
    upgrade(settings.catalog_url)
    (root / "recipe.yaml").write_text(RECIPE)
    server = start_api_server(settings, root, scheduler=dask_client.scheduler.address,
                              recipe=root / "recipe.yaml",
                              extra_env={"MEDIAFARM_API_RATE_LIMIT": "1000",
                                         "MEDIAFARM_API_RATE_BURST": "1000",
                                         "MEDIAFARM_API_URL_SECRET": "s" * 64})
    yield Deployment(server, settings)
    server.stop()


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


def _ready(http, served, data: bytes, name: str, content_type: str) -> tuple[dict, dict]:
    alice = served.token("alice")
    answer = http.post(f"{served.url}/v1/assets", headers=alice,
                       files={"file": (name, data, content_type)})
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], alice, timeout=300)
    assert asset["status"] == "ready", asset
    return asset, alice


@pytest.fixture(scope="module")
def picture(http, served) -> tuple[dict, dict]:
    return _ready(http, served, scene(640, 480, 7).jpegsave_buffer(Q=85), "p.jpg", "image/jpeg")


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def test_a_signed_url_serves_without_a_token_with_cache_headers(http, served, picture):
    asset, alice = picture
    [thumb] = asset["renditions"]
    assert set(parse_qs(urlsplit(thumb["url"]).query)) == {"asset", "expires", "sig"}
    response = http.get(thumb["url"])
    assert response.status_code == 200 and len(response.content) == thumb["bytes"]
    assert response.headers["etag"] == f'"{thumb["sha256"]}"'
    assert response.headers["accept-ranges"] == "bytes"
    cache = response.headers["cache-control"]
    assert cache.startswith("public, max-age=") and cache.endswith(", immutable")
    assert 0 < int(cache.split("max-age=")[1].split(",")[0]) <= 3600
    bare = thumb["url"].split("?")[0]
    by_token = http.get(bare, headers=alice)  # the token still works, privately cached
    assert by_token.content == response.content
    assert by_token.headers["cache-control"].startswith("private")
    _error(http.get(bare), 401, "unauthorized")


def test_a_forged_tampered_or_expired_signature_is_403(http, served, picture):
    asset, _ = picture
    url = asset["renditions"][0]["url"]
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    other = "0" * 64 if sig != "0" * 64 else "1" * 64
    later = str(int(parse_qs(urlsplit(url).query)["expires"][0]) + 1)
    for bad in (_with(url, sig=other), _with(url, expires=later),
                _with(url, asset="00000000-0000-0000-0000-000000000000"),
                _with(url, sig=sig.upper()), url.split("?")[0] + "?sig=" + sig):
        _error(http.get(bad), 403, "forbidden")
    sha = asset["renditions"][0]["sha256"]
    path = f"/v1/renditions/{sha}"
    past = int(time.time()) - 1  # signed with the server's own secret, but already expired
    _error(http.get(f"{served.url}{path}?{signed_query(b's' * 64, path, asset['id'], past)}"),
           403, "forbidden")
    fresh = int(time.time()) + 60
    assert http.get(f"{served.url}{path}?{signed_query(b's' * 64, path, asset['id'], fresh)}"
                    ).status_code == 200
    wrong_key = signed_query(b"t" * 64, path, asset["id"], fresh)
    _error(http.get(f"{served.url}{path}?{wrong_key}"), 403, "forbidden")


def test_etag_and_if_none_match_give_304(http, served, picture):
    url = picture[0]["renditions"][0]["url"]
    tag = http.get(url).headers["etag"]
    again = http.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert http.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_range_requests_are_206_with_the_bytes_or_416(http, served, picture):
    url = picture[0]["renditions"][0]["url"]
    whole = http.get(url).content
    size = len(whole)
    for header, expected, start, end in (("bytes=0-9", whole[:10], 0, 9),
                                         (f"bytes={size - 5}-", whole[-5:], size - 5, size - 1),
                                         ("bytes=-7", whole[-7:], size - 7, size - 1),
                                         (f"bytes=10-{size + 99}", whole[10:], 10, size - 1)):
        part = http.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == expected
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
    refused = http.get(url, headers={"Range": f"bytes={size}-"})
    _error(refused, 416, "range_not_satisfiable")
    assert refused.headers["content-range"] == f"bytes */{size}"
    _error(http.get(url, headers={"Range": "pages=1-2"}), 400, "bad_range")


def test_a_deleted_assets_signed_urls_stop_at_once(http, served):
    asset, alice = _ready(http, served, scene(320, 240, 8).jpegsave_buffer(Q=80), "d.jpg",
                          "image/jpeg")
    url = asset["renditions"][0]["url"]
    assert http.get(url).status_code == 200
    assert http.delete(f"{served.url}/v1/assets/{asset['id']}", headers=alice).status_code == 204
    _error(http.get(url), 404, "not_found")


def _video(tmp_path: Path) -> bytes:
    path = tmp_path / "v.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
                    "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(SECONDS),
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(path)], check=True)
    return path.read_bytes()


def test_hls_and_dash_through_signed_urls_only(http, served, tmp_path):
    asset, _ = _ready(http, served, _video(tmp_path), "v.mp4", "video/mp4")
    hls = next(r for r in asset["renditions"] if r["preset"] == "h264-hls")
    assert urlsplit(hls["url"]).path.endswith(f"/v1/renditions/{hls['sha256']}/master.m3u8")
    master = http.get(hls["url"])  # no token from here on
    assert master.status_code == 200, master.text
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    [variant] = [line for line in master.text.splitlines() if line and not line.startswith("#")]
    media = http.get(str(httpx.URL(hls["url"]).join(variant)))
    assert media.status_code == 200
    init = media.text.split('#EXT-X-MAP:URI="', 1)[1].split('"', 1)[0]
    segments = [line for line in media.text.splitlines() if line and not line.startswith("#")]
    assert all("sig=" in uri for uri in (init, *segments))
    base = httpx.URL(hls["url"]).join(variant)
    first = http.get(str(base.join(segments[0])))
    assert first.status_code == 200 and first.headers["content-type"] == "video/iso.segment"
    assert "immutable" in first.headers["cache-control"]
    part = http.get(str(base.join(segments[0])), headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == first.content[:100]
    tampered = _with(str(base.join(segments[0])), sig="f" * 64)
    _error(http.get(tampered), 403, "forbidden")
    _error(http.get(str(base.join(segments[0])).split("?")[0]), 401, "unauthorized")

    # DASH: the MPD over the same segments; what it names, fetched signed, decodes.
    assert hls["dash_url"] and urlsplit(hls["dash_url"]).path.endswith("/manifest.mpd")
    answer = http.get(hls["dash_url"])
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/dash+xml")
    ns = {"mpd": MPD_NAMESPACE}
    root = ET.fromstring(answer.content)
    decoded = 0
    for representation in root.iterfind(".//mpd:Representation", ns):
        template = representation.find("mpd:SegmentTemplate", ns)
        count = sum(int(s.get("r", "0")) + 1 for s in template.iterfind(".//mpd:S", ns))
        names = [template.get("initialization")] + [
            template.get("media").replace("$Number%05d$", f"{n:05d}") for n in range(1, count + 1)]
        body = b""
        for name in names:
            got = http.get(str(httpx.URL(hls["dash_url"]).join(name)))
            assert got.status_code == 200, (name, got.text[:200])
            body += got.content
        joined = tmp_path / f"{representation.get('id')}.mp4"
        joined.write_bytes(body)
        with av.open(str(joined), options={"protocol_whitelist": "file"}) as container:
            decoded += sum(1 for _ in container.decode(video=0))
    assert decoded == FPS * SECONDS
