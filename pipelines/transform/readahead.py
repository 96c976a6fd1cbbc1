"""Run a generator in its own thread, a bounded number of items ahead of its consumer.

The transcode loop uses it to decode and scale in one thread while another
encodes and muxes (and the catalog's Parquet export, to read the next batch of rows
while it writes one). PyAV lets go of the GIL inside libavcodec and swscale, so the
decoder's serial work overlaps the encoder's instead of taking turns with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()
# How often a producer blocked on a full queue checks whether the consumer has gone.
_STOP_POLL_S = 0.1


class ReadAhead(Generic[T]):
    """Iterate ``items`` in a daemon thread; iterate this object to get them, in order.

    An exception raised by ``items`` is raised again to the consumer after the
    items before it. Use it as a context manager: leaving early (the consumer
    failed) stops the producer at its next item and waits for it, so nothing
    is left touching the producer's objects.
    """

    def __init__(self, items: Iterable[T], size: int, name: str) -> None:
        self._queue: queue.Queue = queue.Queue(size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)

    def __enter__(self) -> ReadAhead[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> Iterator[T]:
        while (item := self._queue.get()) is not _END:
            yield item
        if self._error is not None:
            raise self._error

    def _produce(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which decides what it means
            self._error = exc
        finally:
            if isinstance(items, Generator):
                items.close()  # its clean-up runs here, in its own thread, not at some later GC
        self._put(_END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_POLL_S)
                return True
            except queue.Full:
                continue
        return False
