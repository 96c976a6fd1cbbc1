"""Stage stops survive pickling: Dask moves them between worker processes."""

from __future__ import annotations

import pickle

import pytest

from cluster.stores import StorageUnavailable
from pipelines.outcome import Failed, Rejected, Status


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
