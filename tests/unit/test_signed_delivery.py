"""Signed URLs and what delivery puts on the wire, as pure functions: no server, no store."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from cluster.http import delivery, signed_urls
from pipelines.optimize.dash import MPD_NAMESPACE, DashRung, mpd

SECRET = b"k" * 64
PATH = "/v1/renditions/" + "a" * 64
ASSET = "0779ea0b-914c-5fdf-aa4d-d7004578080a"
NOW = 1_800_000_000


def _parts(query: str) -> dict:
    return dict(p.split("=", 1) for p in query.split("&"))


def test_a_signature_holds_until_it_expires_and_only_for_what_it_signed():
    q = _parts(signed_urls.signed_query(SECRET, PATH, ASSET, NOW + 60))
    assert q["asset"] == ASSET and q["expires"] == str(NOW + 60)
    assert signed_urls.valid(SECRET, "GET", PATH, ASSET, q["expires"], q["sig"], NOW)
    assert not signed_urls.valid(SECRET, "GET", PATH, ASSET, q["expires"], q["sig"], NOW + 60)
    assert not signed_urls.valid(SECRET, "GET", PATH, ASSET, str(NOW + 61), q["sig"], NOW)
    assert not signed_urls.valid(SECRET, "GET", PATH[:-1] + "b", ASSET, q["expires"], q["sig"], NOW)
    assert not signed_urls.valid(SECRET, "GET", PATH, ASSET[:-1] + "b", q["expires"], q["sig"], NOW)
    assert not signed_urls.valid(SECRET, "DELETE", PATH, ASSET, q["expires"], q["sig"], NOW)
    assert not signed_urls.valid(b"other" * 8, "GET", PATH, ASSET, q["expires"], q["sig"], NOW)
    flipped = q["sig"][:-1] + ("0" if q["sig"][-1] != "0" else "1")
    assert not signed_urls.valid(SECRET, "GET", PATH, ASSET, q["expires"], flipped, NOW)
    for expires in ("", "-1", "1e9", "9" * 13, "\u0669" * 10):  # Arabic-Indic nines
        assert not signed_urls.valid(SECRET, "GET", PATH, ASSET, expires, q["sig"], NOW)
    assert not signed_urls.valid(SECRET, "GET", PATH, ASSET, q["expires"], "é" * 64, NOW)


def test_the_secret_comes_from_the_setting_or_is_made_once_in_the_data_folder(tmp_path):
    assert signed_urls.load_secret("from-the-environment", str(tmp_path)) == b"from-the-environment"
    assert not (tmp_path / signed_urls.SECRET_FILE).exists()
    made = signed_urls.load_secret(None, str(tmp_path / "data"))
    assert len(made) == 64 and signed_urls.load_secret(None, str(tmp_path / "data")) == made
    assert os.stat(tmp_path / "data" / signed_urls.SECRET_FILE).st_mode & 0o077 == 0
    assert os.listdir(tmp_path / "data") == [signed_urls.SECRET_FILE]
    (tmp_path / "data" / signed_urls.SECRET_FILE).write_text("")
    with pytest.raises(ValueError):
        signed_urls.load_secret(None, str(tmp_path / "data"))


def test_package_files_are_plain_relative_names_of_known_kinds():
    for good in ("master.m3u8", "manifest.mpd", "360p/index.m3u8", "360p/init.mp4",
                 "360p/seg-00001.m4s"):
        assert delivery.package_file(good) == good.rsplit(".", 1)[1]
    for bad in ("../x.m4s", "360p/../../a.mp4", "/etc/a.mp4", ".hidden.mp4", "a//b.mp4",
                "a.txt", "360p", "a\\b.mp4", "a.mp4?x", "%2e%2e/a.mp4", ""):
        assert delivery.package_file(bad) is None, bad


def test_headers_for_content_addressed_bytes():
    assert delivery.etag("ab" * 32) == f'"{"ab" * 32}"'
    assert delivery.cache_control(None) == "private, max-age=3600, immutable"
    assert delivery.cache_control(120) == "public, max-age=120, immutable"
    assert delivery.cache_control(120, manifest=True) == "public, max-age=120"
    assert delivery.cache_control(None, manifest=True) == "private, no-cache"
    tag = '"x"'
    assert delivery.not_modified('"x"', tag) and delivery.not_modified('W/"x", "y"', tag)
    assert delivery.not_modified("*", tag)
    assert not delivery.not_modified('"y"', tag) and not delivery.not_modified(None, tag)


def test_ranges_no_byte_satisfies_are_416_and_malformed_ones_400():
    assert delivery.range_refusal(None, 10) is None
    assert delivery.range_refusal("bytes=0-3", 10) is None
    assert delivery.range_refusal("bytes=-3", 10) is None
    assert delivery.range_refusal("bytes=9-", 10) is None
    assert delivery.range_refusal("bytes=10-", 10)[0] == 416
    assert delivery.range_refusal("bytes=20-30", 10)[0] == 416
    assert delivery.range_refusal("pages=1-2", 10)[0] == 400


def test_playlists_carry_the_signature_on_every_uri():
    master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n360p/index.m3u8\n"
    media = ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.0,\nseg-00001.m4s\n'
             "#EXT-X-ENDLIST\n")
    assert delivery.signed_playlist(master, "a=1&sig=z").splitlines()[-1] == \
        "360p/index.m3u8?a=1&sig=z"
    lines = delivery.signed_playlist(media, "sig=z").splitlines()
    assert lines[1] == '#EXT-X-MAP:URI="init.mp4?sig=z"' and lines[3] == "seg-00001.m4s?sig=z"
    assert lines[-1] == "#EXT-X-ENDLIST"


def test_an_mpd_carries_the_signature_in_its_segment_templates():
    rung = DashRung("360p", "avc1.64001e,mp4a.40.2", 1000, 640, 360, 25.0, "init.mp4",
                    (("seg-00001.m4s", 2.0), ("seg-00002.m4s", 1.5)))
    text = delivery.signed_mpd(mpd([rung], "seg-$Number%05d$.m4s"), "asset=x&sig=z")
    assert "ns0:" not in text and "&amp;" in text
    template = ET.fromstring(text).find(f".//{{{MPD_NAMESPACE}}}SegmentTemplate")
    assert template.get("initialization") == "360p/init.mp4?asset=x&sig=z"
    assert template.get("media") == "360p/seg-$Number%05d$.m4s?asset=x&sig=z"
    timeline = [(s.get("t"), s.get("d")) for s in template.iter(f"{{{MPD_NAMESPACE}}}S")]
    assert timeline == [("0", "2000"), ("2000", "1500")]
