"""catalog.read_ahead: items in order, errors re-raised, a bounded lead, and a clean stop."""

from __future__ import annotations

import threading

import pytest

from catalog.read_ahead import read_ahead


def test_items_come_in_order():
    with read_ahead(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))


def test_the_producer_stays_at_most_depth_ahead():
    produced = []

    def numbers():
        for n in range(10):
            produced.append(n)
            yield n

    with read_ahead(numbers(), depth=2) as items:
        assert next(items) == 0
        threading.Event().wait(0.3)  # time enough for the thread to run ahead as far as it may
        # 0 taken, 1 and 2 waiting, 3 made and blocked on the full queue.
        assert len(produced) <= 4
        assert list(items) == list(range(1, 10))


def test_an_error_while_reading_reaches_the_caller():
    def failing():
        yield 1
        raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"), read_ahead(failing()) as items:
        assert list(items)


def test_leaving_early_stops_the_thread_and_closes_the_reader():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    with pytest.raises(RuntimeError, match="disk full"), read_ahead(endless()) as items:
        for n in items:
            if n == 5:
                raise RuntimeError("disk full")
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_depth_zero_reads_in_the_callers_thread():
    def where():
        yield threading.current_thread()

    with read_ahead(where(), depth=0) as items:
        assert list(items) == [threading.current_thread()]
