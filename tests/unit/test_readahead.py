"""ReadAhead: a generator run in its own thread, bounded ahead of the consumer."""

import threading
import time

import pytest

from pipelines.transform.readahead import ReadAhead


def test_items_arrive_in_order_from_another_thread():
    threads = []

    def numbers():
        for n in range(100):
            threads.append(threading.current_thread().name)
            yield n

    with ReadAhead(numbers(), 4, "test-producer") as ahead:
        assert list(ahead) == list(range(100))
    assert set(threads) == {"test-producer"}


def test_the_producer_stays_within_its_bound():
    made = []

    def numbers():
        for n in range(50):
            made.append(n)
            yield n

    with ReadAhead(numbers(), 3, "test-producer") as ahead:
        items = iter(ahead)
        assert next(items) == 0
        time.sleep(0.3)  # time enough for an unbounded producer to run through all 50
        # One taken, three queued, one made and waiting for room.
        assert len(made) <= 5
        assert list(items) == list(range(1, 50))


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it():
    def failing():
        yield 1
        yield 2
        raise ValueError("decode failed at 0.08s")

    got = []
    with pytest.raises(ValueError, match="decode failed"):
        with ReadAhead(failing(), 8, "test-producer") as ahead:
            for item in ahead:
                got.append(item)
    assert got == [1, 2]


def test_leaving_early_stops_the_producer():
    finished = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            finished.set()

    producer = None
    with pytest.raises(RuntimeError, match="encoder failed"):
        with ReadAhead(endless(), 2, "test-producer") as ahead:
            producer = ahead._thread
            for item in ahead:
                if item == 5:
                    raise RuntimeError("encoder failed")
    assert not producer.is_alive()
    assert finished.is_set()  # the generator was closed, in the producer's thread
