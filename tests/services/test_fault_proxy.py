"""The fault proxy passes, answers S3 errors, or resets, as told; and it cleans up after itself."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest

from .fault_proxy import FaultProxy
from .s3 import make_bucket, s3_filesystem

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP(S)_PROXY


@pytest.fixture
def proxy(s3_endpoint):
    with FaultProxy(s3_endpoint.url) as proxy:
        yield proxy


def _status(url: str, method: str = "GET") -> tuple[int, bytes]:
    try:
        with OPENER.open(urllib.request.Request(url, method=method), timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_pass_mode_is_the_endpoint_itself(proxy, s3_endpoint):
    make_bucket(s3_endpoint.url, "proxied-bucket")
    fs = s3_filesystem(proxy.url)
    fs.pipe_file("proxied-bucket/k", b"through the proxy")
    assert s3_filesystem(s3_endpoint.url).cat_file("proxied-bucket/k") == b"through the proxy"
    assert proxy.counts["forwarded"] >= 1


def test_error_mode_answers_s3_errors_in_turn(proxy):
    proxy.set_mode("error")
    first, second = _status(proxy.url + "/b/k"), _status(proxy.url + "/b/k", method="PUT")
    assert first[0] == 503 and b"<Code>SlowDown</Code>" in first[1]
    assert second[0] == 500 and b"<Code>InternalError</Code>" in second[1]
    assert _status(proxy.url + "/b/k", method="HEAD") == (503, b"")  # no body for HEAD
    assert (proxy.counts["error_503"], proxy.counts["error_500"]) == (2, 1)


def test_down_mode_resets_every_connection(proxy):
    proxy.set_mode("down")
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        OPENER.open(proxy.url + "/", timeout=5)
    assert proxy.counts["reset"] == 1
    proxy.set_mode("pass")
    assert _status(proxy.url + "/")[0] == 200  # back, as if the endpoint returned


def test_leaving_pass_cuts_the_connections_open_through_it(proxy):
    address = urlparse(proxy.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as held:
        deadline = time.monotonic() + 5
        while not proxy.counts["forwarded"] and time.monotonic() < deadline:
            time.sleep(0.05)  # until the proxy has connected it through
        proxy.set_mode("error")
        assert held.recv(1) == b""  # cut, as a pooled keep-alive connection would be
    assert _status(proxy.url + "/")[0] == 503  # and a new one meets the new mode


def test_connections_are_bounded_and_close_ends_every_thread(s3_endpoint):
    proxy = FaultProxy(s3_endpoint.url, max_connections=2)
    host, port = urlparse(proxy.url).hostname, urlparse(proxy.url).port
    held = [socket.create_connection((host, port), timeout=5) for _ in range(2)]
    time.sleep(0.5)  # let the proxy take both
    try:  # the proxy resets the third at once: seen at connect() or at the first read
        with socket.create_connection((host, port), timeout=5) as third:
            assert third.recv(1) == b""
    except ConnectionResetError:
        pass
    assert proxy.counts["reset"] == 1
    proxy.close()
    for sock in held:
        sock.close()
    assert [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy")] == []


def test_unknown_mode_is_refused(proxy):
    with pytest.raises(ValueError, match="unknown mode 'slow'"):
        proxy.set_mode("slow")
