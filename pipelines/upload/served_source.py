"""A stored original served to a sandboxed decoder, range by range, over a Unix socket.

The sandboxed children that demux uploads get no store credentials and open no
network connection. Where the original sits in S3 or R2, the worker would
otherwise copy it whole to scratch disk for each stage and each chunk span of a
long video, gigabytes each time. Instead the worker serves it: the child gets a
``ServedSource`` (a socket path and the size), opens it as a file object, and
each read asks the worker for one byte range, which the worker reads through
the store. Only what the demuxer asks for crosses the network: a chunk span its
own stretch of the file, a poster frame the index and the first seconds.

The protocol is one request and one reply at a time on a connection: an
offset and a length; then a length and that many bytes (fewer at the end of the
object, none past it), or ``FAILED`` when the worker could not read the store.
The worker keeps the store's error and raises it when the child is done (see
``Serving``): the child's own account of a read that failed under it would name
a corrupt file, not the store.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import socket
import socketserver
import struct
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

REQUEST = struct.Struct("!QI")  # offset, length
REPLY = struct.Struct("!I")  # bytes that follow
FAILED = 0xFFFFFFFF
MAX_READ = 16 * 1024 * 1024
# What PyAV asks of a file object per read: fewer, larger requests than its 32 KiB default.
AV_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class ServedSource:
    """Where a sandboxed child reads a stored object: a Unix socket, and the object's size."""

    socket_path: str
    size: int


# What a sandboxed decoder reads: a local path, or an object the worker serves.
Source = str | ServedSource


def open_media(source: Source, **options):
    """``av.open(source, **options)`` for a local path or a served object. Each container of a
    served object gets its own reader (its own position); the container keeps it, and it
    closes when the container is let go."""
    import av

    if not isinstance(source, ServedSource):
        return av.open(source, **options)
    reader = ServedReader(source)
    try:
        return av.open(reader, buffer_size=AV_BUFFER, **options)
    except BaseException:
        reader.close()
        raise


class ServedReader(io.RawIOBase):
    """The child's side: a seekable, read-only file over a ``ServedSource``."""

    def __init__(self, source: ServedSource):
        super().__init__()
        self._size = source.size
        self._position = 0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.connect(source.socket_path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "seek before the start of the file")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), MAX_READ, max(0, self._size - self._position))
        if wanted == 0:
            return 0
        self._socket.sendall(REQUEST.pack(self._position, wanted))
        (length,) = REPLY.unpack(_receive(self._socket, REPLY.size))
        if length == FAILED or length > wanted:
            raise OSError(errno.EIO, "the worker could not read the stored original")
        _receive_into(self._socket, memoryview(buffer)[:length])
        self._position += length
        return length

    def close(self) -> None:
        if not self.closed:
            self._socket.close()
        super().close()


def _receive(sock: socket.socket, count: int) -> bytearray:
    data = bytearray(count)
    _receive_into(sock, memoryview(data))
    return data


def _receive_into(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``; EOF first is an OSError (the peer closed, or is gone)."""
    received = 0
    while received < len(view):
        got = sock.recv_into(view[received:])
        if got == 0:
            raise OSError(errno.EIO, "the other side of the served source closed")
        received += got


class RangeReader(Protocol):
    """What ``Serving`` reads through: one per connection."""

    def read_at(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class Serving:
    """The worker's side: serve the object that ``open_object`` opens, while in a ``with``.

    ``open_object`` returns a fresh ``RangeReader`` (say, over an fsspec file with its own
    read-ahead) for each connection: a transcode and the poster taken beside it read
    different places. A read that fails is answered ``FAILED`` and its exception is
    raised when the ``with`` ends, whatever the child made of it.
    """

    def __init__(self, open_object: Callable[[], RangeReader], size: int):
        self._open = open_object
        self._size = size
        self._folder = None
        self._server = None
        self._thread = None
        self.error: BaseException | None = None

    def __enter__(self) -> ServedSource:
        # A private folder: the socket is reachable by this user only, and its path is short.
        self._folder = tempfile.mkdtemp(prefix="mediafarm-serve-")
        path = os.path.join(self._folder, "source")
        self._server = _Server(path, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mediafarm-serve",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return ServedSource(path, self._size)

    def __exit__(self, kind, value, traceback) -> bool:
        self._server.shutdown()
        self._server.server_close()  # waits for the connections' threads: the children are gone
        self._thread.join()
        shutil.rmtree(self._folder, ignore_errors=True)
        if self.error is not None:
            raise self.error from value
        return False

    def _serve(self, connection: socket.socket) -> None:
        try:
            file = self._open()
        except BaseException as exc:  # noqa: BLE001  (the store's error, raised on exit)
            self.error = self.error or exc
            return
        with contextlib.closing(file):
            while True:
                try:
                    request = _receive(connection, REQUEST.size)
                except OSError:
                    return  # the child closed its reader, or is gone
                offset, length = REQUEST.unpack(request)
                try:
                    data = file.read_at(offset, min(length, MAX_READ))
                except BaseException as exc:  # noqa: BLE001  (as above)
                    self.error = self.error or exc
                    connection.sendall(REPLY.pack(FAILED))
                    return
                connection.sendall(REPLY.pack(len(data)))
                connection.sendall(data)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = False  # server_close joins them
    block_on_close = True

    def __init__(self, path: str, serving: Serving):
        self.serving = serving
        super().__init__(path, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            self.server.serving._serve(self.request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child was killed mid-reply (a timeout, a crash): its outcome says why
