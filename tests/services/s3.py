"""Run an in-process moto S3 server on loopback and create buckets on it."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import s3fs
from moto.s3.models import FakeKey
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

# moto accepts any credentials; these are passed explicitly so the process environment is untouched.
DUMMY_KEY = "testing"
DUMMY_SECRET = "testing"
REGION = "us-east-1"


@dataclass
class MotoEndpoint:
    """A running moto server and the URL it serves S3 on."""

    url: str
    server: ThreadedMotoServer

    def stop(self) -> None:
        """Shut the server thread down."""
        self.server.stop()


class _Window:
    """A moto object's bytes, read from its file only where sliced.

    moto answers a ranged GET by reading the whole object (``FakeKey.value``), then
    slicing it: each 32 MiB read of a 2 GiB object read 2 GiB, under the object's lock.
    S3 reads only the range. The bytes are the same either way; this makes the cost S3's
    too, so that tests of ranged reads of multi-GiB objects finish (see ``_read_ranges``).
    """

    def __init__(self, key: FakeKey) -> None:
        self._key = key

    def __len__(self) -> int:
        return self._key.size

    def __getitem__(self, window: slice) -> bytes:
        start, stop, _ = window.indices(len(self))
        with self._key.lock:
            self._key._value_buffer.seek(start)
            return self._key._value_buffer.read(max(0, stop - start))

    def __iter__(self):  # the whole object, if moto ends up not slicing it after all
        for start in range(0, len(self), 16 * 1024 * 1024):
            yield self[start:start + 16 * 1024 * 1024]


_ranged_get = threading.local()


def _read_ranges() -> None:
    """Make moto's GET with a Range header read only that range (see ``_Window``)."""
    if getattr(S3Response.get_object, "reads_ranges", False):
        return
    whole_value, whole_get = FakeKey.value, S3Response.get_object

    def value(key: FakeKey):
        return _Window(key) if getattr(_ranged_get, "active", False) else whole_value.fget(key)

    def get_object(response: S3Response):
        _ranged_get.active = "," not in response.headers.get("range", ",")
        try:
            return whole_get(response)
        finally:
            _ranged_get.active = False

    get_object.reads_ranges = True
    FakeKey.value = property(value, whole_value.fset)
    S3Response.get_object = get_object


def start_moto(port: int | None = None, timeout: float = 30) -> MotoEndpoint:
    """Start moto on 127.0.0.1 (a free port unless given) and wait until HTTP answers."""
    if port is not None:
        # moto's start() waits forever if its bind fails, so fail fast on a busy port instead.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", port))
    _read_ranges()
    # Port 0 lets the kernel choose, so there is no race between picking and binding.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port or 0, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    url = f"http://{host}:{bound_port}"
    _wait_for_http(url, timeout)
    return MotoEndpoint(url=url, server=server)


def s3_filesystem(endpoint_url: str) -> s3fs.S3FileSystem:
    """Return a fresh (uncached) s3fs filesystem talking to ``endpoint_url`` with dummy credentials."""
    # s3fs caches instances by arguments; a fresh one avoids stale listings from an earlier server.
    return s3fs.S3FileSystem(
        key=DUMMY_KEY,
        secret=DUMMY_SECRET,
        client_kwargs={"endpoint_url": endpoint_url, "region_name": REGION},
        skip_instance_cache=True,
    )


def make_bucket(endpoint_url: str, bucket: str) -> None:
    """Create ``bucket`` on the endpoint unless it already exists."""
    fs = s3_filesystem(endpoint_url)
    if fs.exists(bucket):
        return
    try:
        # Not fs.mkdir: it sends LocationConstraint=us-east-1, which S3 and moto reject.
        fs.call_s3("create_bucket", Bucket=bucket)
    except FileExistsError:
        pass  # created concurrently by another test or worker
    fs.invalidate_cache()


def _wait_for_http(url: str, timeout: float) -> None:
    """Poll ``url`` until any HTTP response arrives, or raise RuntimeError."""
    # Bypass any HTTP(S)_PROXY from the environment: the server is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error status still means the server is answering
        except OSError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server at {url} did not answer within {timeout}s: {error}") from error
            time.sleep(0.1)
