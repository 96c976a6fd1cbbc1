"""Stage stops survive pickling: Dask moves them between worker processes."""

from __future__ import annotations

import pickle

import av
import pytest

from cluster.storage.retry import StorageUnavailable
from pipelines.outcome import MESSAGE_CHARS, Failed, Rejected, Status, unexpected


@pytest.mark.parametrize("stop", [
    Rejected("corrupt", "the moov atom is missing", details={"at_s": 3.5}),
    Failed("encoder_unavailable", "h264_nvenc does not open here", retryable=False),
    Failed("internal_error", "boom", retryable=True),
    StorageUnavailable("reading a key failed after 3 attempts", {"attempts": 3}),
])
def test_a_stop_comes_back_from_pickle_whole(stop):
    back = pickle.loads(pickle.dumps(stop))
    assert type(back) is type(stop)
    assert (back.reason, back.message, back.retryable, back.details) == \
        (stop.reason, stop.message, stop.retryable, stop.details)
    assert back.status in (Status.REJECTED, Status.FAILED) and str(back) == str(stop)


@pytest.mark.parametrize(("error", "retryable"), [
    # The same bytes through the same code raise these again: a retry only burns a worker.
    (UnicodeDecodeError("utf-8", b"Gr\xf6\xdfe", 2, 3, "invalid start byte"), False),
    (ValueError("a decoder's complaint"), False),
    (av.error.InvalidDataError(1094995529, "Invalid data found when processing input"), False),
    (KeyError("exif-ifd0-Make"), False),
    (IndexError("list index out of range"), False),
    (TypeError("'NoneType' object is not subscriptable"), False),
    (ZeroDivisionError("division by zero"), False),
    (AttributeError("'NoneType' object has no attribute 'width'"), False),
    (AssertionError(), False),
    (NotImplementedError(), False),
    (RecursionError("maximum recursion depth exceeded"), False),
    # These depend on the world: a file system, a socket, a service, a busy worker.
    (OSError(5, "Input/output error"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (TimeoutError("timed out"), True),
    (MemoryError(), True),
    (RuntimeError("cannot schedule new futures after interpreter shutdown"), True),
])
def test_an_unexpected_error_is_retryable_only_when_a_retry_could_differ(error, retryable):
    stop = unexpected(error)
    assert (stop.status, stop.reason, stop.retryable) == (Status.FAILED, "internal_error", retryable)
    assert stop.message.startswith(type(error).__name__)


def test_an_unexpected_error_keeps_its_cause_within_bounds():
    stop = unexpected(ValueError("cause " + "x" * 5000 + " end"))
    assert len(stop.message) <= MESSAGE_CHARS
    assert stop.message.startswith("ValueError: cause") and stop.message.endswith("end")
