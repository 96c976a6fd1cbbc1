"""The streamed pass over a source (cluster.source_pass) against a real clamd, on local
folders and on a moto S3 endpoint: limits by kind, the scanner limit, quarantine, a source
that changes under the read."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from cluster.config import STORE_NAMES
from cluster.source_pass import INLINE_IMAGE_BYTES, read_pass
from cluster.storage.stores import open_stores
from pipelines.outcome import Failed, Rejected
from pipelines.upload.scan import ClamdScanner
from pipelines.upload.validate import Limits
from tests.conftest import make_settings, s3_store
from tests.integration.test_scan import MARKER

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def settings(request, tmp_path, sqlite_url, clamd):
    stores = None
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        stores = {name: s3_store(endpoint, name) for name in STORE_NAMES}
    return make_settings(tmp_path / "data", sqlite_url, clamd.url, stores)


def _video(path: Path, seconds: float, bit_rate: str = "8M") -> Path:
    """A small-frame H.264 clip at a high constant bit rate: many bytes, cheap to make."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-b:v", bit_rate, "-minrate", bit_rate, "-maxrate",
                    bit_rate, "-bufsize", "2M", "-x264-params", "nal-hrd=cbr", "-pix_fmt",
                    "yuv420p", str(path)], check=True)
    return path


def _pass(settings, path: Path, **kwargs):
    stores = open_stores(settings)
    return read_pass(str(path), settings, stores, ClamdScanner(settings.clamd_url), **kwargs), stores


def _left(stores) -> dict:
    return {name: (store.digests(), store.staging_keys()) for name, store in stores.items()
            if name in ("originals", "quarantine")}


def test_a_video_is_staged_by_reference_hashed_and_scanned_in_one_read(settings, tmp_path):
    video = _video(tmp_path / "clip.mp4", 25)  # about 25 MiB: past the in-memory threshold
    passed, stores = _pass(settings, video)
    data = video.read_bytes()
    assert passed.data is None and passed.staged is not None and passed.format == "mp4"
    assert (passed.staged.size, passed.staged.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert passed.details["clean"] and passed.details["bytes"] == len(data)
    assert passed.details["engine"].startswith("ClamAV")
    assert stores["originals"].read_staged(passed.staged) == data
    stores["originals"].discard(passed.staged)
    assert _left(stores) == {"originals": ([], []), "quarantine": ([], [])}


def test_a_small_image_keeps_the_in_memory_path(settings, tmp_path):
    from cluster.cli.samples import write_samples

    photo = write_samples(tmp_path / "samples", photos=1)[0]
    passed, stores = _pass(settings, photo)
    assert passed.staged is None and passed.data == photo.read_bytes()
    assert os.path.getsize(photo) <= INLINE_IMAGE_BYTES
    assert _left(stores)["originals"] == ([], [])


def test_an_infected_stream_goes_to_quarantine_only(settings, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * MiB) + MARKER + os.urandom(1000))  # streamed, not inline
    with pytest.raises(Rejected) as caught:
        _pass(settings, source)
    assert caught.value.reason == "infected"
    digest = caught.value.details["quarantine_sha256"]
    stores = open_stores(settings)
    assert _left(stores) == {"originals": ([], []), "quarantine": ([digest], [])}
    assert stores["quarantine"].size(digest) == source.stat().st_size


def test_a_source_over_the_scanner_limit_is_rejected_before_any_byte_is_stored(settings, tmp_path):
    video = _video(tmp_path / "clip.mp4", 4)
    strict = dataclasses.replace(settings, scan_max_bytes=1 * MiB)
    with pytest.raises(Rejected) as caught:
        _pass(strict, video)
    assert caught.value.reason == "scan_limit_exceeded"
    assert caught.value.details == {"bytes": video.stat().st_size, "scanner_limit": MiB}
    assert _left(open_stores(strict)) == {"originals": ([], []), "quarantine": ([], [])}


def test_the_explicit_opt_in_stores_an_oversize_source_unscanned_and_says_so(settings, tmp_path):
    video = _video(tmp_path / "clip.mp4", 4)
    trusting = dataclasses.replace(settings, scan_max_bytes=1 * MiB, scan_oversize="skip")
    passed, stores = _pass(trusting, video)
    assert passed.details["scan"] == "skipped (over scanner limit)"
    assert (passed.details["bytes"], passed.details["scanner_limit"]) == (video.stat().st_size, MiB)
    assert passed.details["skipped"] and "clean" not in passed.details
    stores["originals"].discard(passed.staged)


def test_size_limits_are_by_kind_and_enforced_from_the_first_bytes(settings, tmp_path):
    from cluster.cli.samples import write_samples

    photo = write_samples(tmp_path / "samples", photos=1)[0]
    video = _video(tmp_path / "clip.mp4", 2)
    limits = Limits(max_image_bytes=1000, max_media_bytes=video.stat().st_size)
    tight = dataclasses.replace(settings, limits=limits)
    with pytest.raises(Rejected) as caught:
        _pass(tight, photo)
    assert caught.value.reason == "too_large" and "an image (jpeg) is 1000" in caught.value.message
    passed, stores = _pass(tight, video)  # far over the image limit, within the media limit
    assert passed.staged.size == video.stat().st_size
    stores["originals"].discard(passed.staged)
    smaller = dataclasses.replace(settings, limits=dataclasses.replace(
        limits, max_media_bytes=video.stat().st_size - 1))
    with pytest.raises(Rejected) as caught:
        _pass(smaller, video)
    assert caught.value.reason == "too_large" and "a video or audio file (mp4)" in caught.value.message
    assert caught.value.details["bytes"] == video.stat().st_size
    assert _left(stores) == {"originals": ([], []), "quarantine": ([], [])}


def test_a_source_that_changes_while_it_is_read_fails_retryably(settings, tmp_path):
    video = _video(tmp_path / "clip.mp4", 25)

    def append_once(count: int) -> None:
        if count > 8 * MiB and not append_once.done:
            append_once.done = True
            with open(video, "ab") as handle:
                handle.write(b"\0" * 4096)
    append_once.done = False
    with pytest.raises(Failed) as caught:
        _pass(settings, video, on_chunk=append_once)
    assert (caught.value.reason, caught.value.retryable) == ("source_changed", True)
    assert _left(open_stores(settings)) == {"originals": ([], []), "quarantine": ([], [])}
