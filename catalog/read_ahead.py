"""Read the next record batches in a thread while the current one is written.

Reading (ADBC decoding PostgreSQL's binary rows; sqlite3 stepping) and writing (partition
filters, zstd) both release the GIL, so on two cores they overlap: a million-row export
spends about as long on each. ``depth`` bounds what waits, so memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
_END = object()


@contextmanager
def read_ahead(items: Iterator[T], depth: int = 1) -> Iterator[Iterator[T]]:
    """``items`` taken in a thread, at most ``depth`` ahead of the caller; errors re-raised.

    Leaving the block early stops the thread after its current item and closes ``items``
    there (a generator's ``finally`` runs in the thread that iterates it). ``depth=0``:
    no thread, ``items`` as they are (for readers bound to the caller's thread).
    """
    if depth == 0:
        yield items
        return
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                waiting.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # handed to the caller, which re-raises it
            put((_END, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
