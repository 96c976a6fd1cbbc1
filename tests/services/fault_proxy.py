"""A loopback TCP proxy in front of an HTTP endpoint, which a test breaks on purpose.

Modes, switched at any time with ``set_mode``:

- ``pass``: bytes go through to the endpoint untouched;
- ``error``: the proxy answers every request itself with an S3 error, ``503 SlowDown``
  and ``500 InternalError`` in turn, with the XML body S3 sends;
- ``down``: every connection is reset as soon as it is accepted, as if the endpoint
  had vanished.

Leaving ``pass`` cuts the connections open through the proxy, so a client that pools
keep-alive connections meets the new mode at its next request, as it would for real.
At most ``max_connections`` are served at once (more are reset), each by one thread;
``close`` ends them all.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import threading
from collections import Counter
from urllib.parse import urlparse

MODES = ("pass", "error", "down")
# (status, reason phrase, S3 error code, message), answered in turn in "error" mode.
ERRORS = ((503, "Slow Down", "SlowDown", "Please reduce your request rate."),
          (500, "Internal Server Error", "InternalError",
           "We encountered an internal error. Please try again."))
MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 2**20


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_url``, or fail in the way ``mode`` says."""

    def __init__(self, upstream_url: str, *, max_connections: int = 64,
                 timeout: float = 10.0) -> None:
        parsed = urlparse(upstream_url)
        self._upstream = (parsed.hostname, parsed.port)
        self._timeout = timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # so the accept loop notices close()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.counts: Counter = Counter()  # forwarded, reset, and one key per error status
        self._mode = "pass"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._errors = itertools.cycle(ERRORS)
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._acceptor.start()

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        with self._lock:
            self._mode = mode
            cut = list(self._open) if mode != "pass" else []
        for sock in cut:
            _shut(sock)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            cut, threads = list(self._open), list(self._threads)
        for sock in cut:
            _shut(sock)
        for thread in threads:
            thread.join(timeout=5)
        alive = [t.name for t in threads if t.is_alive()]
        if alive or self._acceptor.is_alive():
            raise RuntimeError(f"fault proxy threads still running after close: {alive}")

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            with self._lock:
                mode = self._mode
                serve = mode != "down" and self._slots.acquire(blocking=False)
                if serve:
                    self._open.add(client)  # under the lock, so set_mode cannot miss it
            if not serve:
                self._count("reset")
                _reset(client)
                continue
            thread = threading.Thread(target=self._serve, args=(client, mode),
                                      name=f"fault-proxy-{mode}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        try:
            client.settimeout(self._timeout)
            if mode == "error":
                self._answer_with_error(client)
            else:
                self._forward(client)
        except OSError:
            pass  # cut by set_mode or close, or the client went away: nothing to report
        finally:
            with self._lock:
                self._open.discard(client)
                self._threads.discard(threading.current_thread())
            client.close()
            self._slots.release()

    def _forward(self, client: socket.socket) -> None:
        with socket.create_connection(self._upstream, timeout=self._timeout) as upstream:
            self._count("forwarded")
            peers = {client: upstream, upstream: client}
            while not self._closed.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)

    def _answer_with_error(self, client: socket.socket) -> None:
        head, body_read = _read_head(client)
        if head is None:
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        if "100-continue" not in headers.get("expect", "").lower():
            _drain(client, int(headers.get("content-length") or 0) - body_read)
        with self._lock:
            status, phrase, code, message = next(self._errors)
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
               f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>").encode()
        body = b"" if request_line.startswith("HEAD ") else xml
        # Counted before the reply leaves: a client that has its answer may read the counts at once.
        self._count(f"error_{status}")
        client.sendall(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/xml\r\n"
                       f"Content-Length: {len(xml)}\r\nConnection: close\r\n\r\n".encode() + body)
        # Wait for the client to close first: closing on unread bytes would send an RST,
        # and the client could lose the reply.
        client.shutdown(socket.SHUT_WR)
        client.settimeout(1.0)
        _drain(client, MAX_BODY)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1


def _read_head(sock: socket.socket) -> tuple[bytes | None, int]:
    """The request head, and how many body bytes came with it; (None, 0) if none arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > MAX_HEAD:
            return None, 0
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, len(rest)


def _drain(sock: socket.socket, count: int) -> None:
    """Read and drop up to ``count`` bytes (a request body nobody will answer)."""
    count = min(count, MAX_BODY)
    while count > 0:
        chunk = sock.recv(min(65536, count))
        if not chunk:
            return
        count -= len(chunk)


def _shut(sock: socket.socket) -> None:
    """Make the thread serving ``sock`` stop: its next read sees the end."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: the client sees 'connection reset by peer'."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
