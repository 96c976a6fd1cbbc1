"""A loopback TCP proxy that caps the bytes a client sends a second: a slow uplink.

Uploads over loopback end before a test can interrupt them halfway; through this
proxy they take seconds. When the client goes (killed, or hung up), the proxy hangs
up on the server too, as a dropped link would.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

CHUNK = 64 * 1024


class ThrottledProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_url``, client to server at ``rate`` bytes/s."""

    def __init__(self, upstream_url: str, rate: float) -> None:
        parsed = urlsplit(upstream_url)
        self._upstream = (parsed.hostname, parsed.port)
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="throttle", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in list(self._sockets):
            _shut(sock)

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            self._sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, self.rate),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, rate: float | None) -> None:
        started, sent = time.monotonic(), 0
        try:
            while data := source.recv(CHUNK):
                target.sendall(data)
                sent += len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            _shut(source)
            _shut(target)
            self._sockets -= {source, target}


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
