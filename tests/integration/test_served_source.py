"""A stored original served to sandboxed decoders range by range (pipelines/upload/served_source.py).

The worker side here reads a local file, counting what it serves: the protocol, the
sandboxed probe, poster and chunk encode are the real ones. The same through S3 runs
in tests/contracts (``Store.readable``) and tests/e2e/test_large_media.py.
"""

from __future__ import annotations

import io
import subprocess
import threading
from pathlib import Path

import pytest

from pipelines.outcome import Rejected, StageStop
from pipelines.recipe import VideoPreset
from pipelines.transform.chunks import encode_chunk, keyframe_times
from pipelines.transform.video import poster_frame, poster_frame_isolated
from pipelines.upload.media_probe import probe_media_file
from pipelines.upload.served_source import ServedReader, ServedSource, Serving
from pipelines.upload.validate import validate_media_file

PRESET = VideoPreset("h264", heights=(120,), speed="ultrafast", audio_codec=None)


class CountingFile:
    """A RangeReader over a local file that notes each range it serves."""

    def __init__(self, path: Path, served: list, fail_after: int | None = None):
        self._file = open(path, "rb")
        self._served = served
        self._fail_after = fail_after

    def read_at(self, offset: int, length: int) -> bytes:
        if self._fail_after is not None and offset >= self._fail_after:
            raise StoreBroke("the store went away")
        self._file.seek(offset)
        data = self._file.read(length)
        self._served.append((offset, len(data)))
        return data

    def close(self) -> None:
        self._file.close()


class StoreBroke(ConnectionError):
    pass


def serving(path: Path, served: list, fail_after: int | None = None) -> Serving:
    return Serving(lambda: CountingFile(path, served, fail_after), path.stat().st_size)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """40 s at 10 Mb/s (about 50 MB), a keyframe every 2 s and the index at the end (no
    faststart), as cameras write."""
    path = tmp_path_factory.mktemp("served") / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", "40", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "50", "-b:v", "10M", "-minrate", "10M", "-maxrate", "10M",
                    "-bufsize", "1M", "-x264-params", "nal-hrd=cbr", "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    return path


def test_the_reader_is_a_seekable_file_over_the_socket(tmp_path):
    data = bytes(range(256)) * 4096 * 5  # 5 MiB
    path = tmp_path / "blob"
    path.write_bytes(data)
    served: list = []
    with serving(path, served) as source:
        with ServedReader(source) as reader:
            assert reader.read(10) == data[:10]
            assert reader.seek(-7, io.SEEK_END) == len(data) - 7
            assert reader.read() == data[-7:]
            assert reader.read(5) == b""  # at the end: nothing asked of the worker
            reader.seek(4 * 1024 * 1024 + 3)
            assert reader.read(3 * 1024 * 1024) == data[4 * 1024 * 1024 + 3:]
            with pytest.raises(OSError):
                reader.seek(-1)
    assert (0, 10) in served and (len(data) - 7, 7) in served


def test_the_sandboxed_probe_and_poster_read_a_served_file_as_they_read_a_path(long_clip):
    served: list = []
    with serving(long_clip, served) as source:
        info = probe_media_file(source)
        frame = poster_frame_isolated(source, info)
        validated = validate_media_file(source, long_clip.read_bytes()[:4096],
                                        long_clip.stat().st_size)
    assert info == probe_media_file(str(long_clip))
    assert frame == poster_frame(str(long_clip), info)
    assert validated.kind == "video" and validated.width == 320
    assert served  # it did go through the socket


def test_a_chunk_span_reads_only_its_part_of_the_file(long_clip, tmp_path):
    """The point of serving ranges: a span from a remote original costs its stretch, not the file."""
    size = long_clip.stat().st_size
    info = probe_media_file(str(long_clip))
    assert keyframe_times(str(long_clip))[-1] == pytest.approx(38.0)
    served: list = []
    with serving(long_clip, served) as source:
        output = encode_chunk(source, str(tmp_path / "span.mp4"), 30.0, 34.0, PRESET, 120, info)
    assert output == str(tmp_path / "span.mp4") and Path(output).stat().st_size > 0
    read = sum(length for _, length in served)
    # Four seconds of forty, plus the index and the read-ahead of one request or two.
    assert read < size / 3, f"{read} of {size} bytes served for a tenth of the video"
    assert min(offset for offset, _ in served if offset > 1024 * 1024) > size / 2


def test_a_store_that_fails_mid_read_is_the_error_not_a_corrupt_file(long_clip):
    size = long_clip.stat().st_size
    info = probe_media_file(str(long_clip))
    with pytest.raises(StoreBroke) as raised:
        with serving(long_clip, [], fail_after=size // 4) as source:
            probe_media_file(source)
    # What the child made of the failed read (a file it could not read through) is the cause.
    assert isinstance(raised.value.__cause__, StageStop), repr(raised.value.__cause__)
    # A poster near the start reads nothing past the failure point: no error to report.
    with serving(long_clip, [], fail_after=size - 1) as source:
        assert poster_frame_isolated(source, info)


def test_a_source_that_is_not_media_is_refused_as_a_path_would_be(tmp_path):
    path = tmp_path / "not-media"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100_000)
    with serving(path, []) as source:
        with pytest.raises(Rejected) as raised:
            probe_media_file(source)
    assert raised.value.reason in {"corrupt", "unsupported_type"}


def test_a_served_source_pickles_small():
    """It travels to the sandboxed child in the call's pickle: a path and a size, no bytes."""
    import pickle

    assert len(pickle.dumps(ServedSource("/tmp/x/source", 5 * 1024 ** 3))) < 200


def test_a_remote_original_is_served_through_outages_and_an_outage_that_lasts_is_the_error(
        s3_endpoint):
    """Store.readable on S3 behind a proxy the test breaks: a short outage is ridden out by
    the store's retries (a ranged read is safe to repeat); one that outlasts the retry
    budget surfaces as StorageUnavailable (retryable) when the stage's ``with`` ends."""
    import hashlib
    import os

    from cluster.storage.retry import Backoff, StorageUnavailable
    from cluster.storage.stores import SERVE_BLOCK, Store
    from tests.conftest import s3_store
    from tests.services.fault_proxy import FaultProxy

    data = os.urandom(SERVE_BLOCK + 3 * 1024 * 1024)  # past one read-ahead block
    digest = hashlib.sha256(data).hexdigest()
    with FaultProxy(s3_endpoint.url) as proxy:
        config = s3_store(s3_endpoint, "originals")
        config = type(config)(config.url, {**config.options, "client_kwargs": {
            **config.options["client_kwargs"], "endpoint_url": proxy.url}})
        store = Store("originals", config, Backoff(budget_s=3, first_s=0.1, cap_s=0.5))
        store.put(digest, data)
        with store.readable(digest) as source:
            with ServedReader(source) as reader:
                assert reader.read(1024 * 1024) == data[:1024 * 1024]
                proxy.set_mode("error")  # 503 SlowDown / 500 InternalError, in turn
                threading.Timer(0.5, proxy.set_mode, ("pass",)).start()
                reader.seek(SERVE_BLOCK + 1024)  # outside the block read ahead: a new GET
                assert reader.read() == data[SERVE_BLOCK + 1024:]
        assert proxy.counts["error_503"] + proxy.counts["error_500"] >= 1  # it met the outage
        with pytest.raises(StorageUnavailable):
            with store.readable(digest) as source:
                with ServedReader(source) as reader:
                    proxy.set_mode("down")
                    with pytest.raises(OSError):
                        reader.read(1024 * 1024)
        proxy.set_mode("pass")
