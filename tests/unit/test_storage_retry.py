"""The store retry policy: which errors are retried, how long it waits, when it gives up."""

from __future__ import annotations

import errno
import pickle

import botocore.exceptions
import pytest

from cluster.config import StoreConfig, load_settings
from cluster.storage.retry import Backoff, StorageUnavailable, retrying, transient
from cluster.storage.stores import Store, open_stores
from pipelines.outcome import Failed


def test_waits_double_from_the_first_up_to_the_cap():
    backoff = Backoff(budget_s=1000, first_s=0.2, cap_s=5)
    ceilings = [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5]
    assert [backoff.wait(n, 0, jitter=0.0) for n in range(1, 9)] == pytest.approx(
        [c / 2 for c in ceilings])
    assert [backoff.wait(n, 0, jitter=0.999999) for n in range(1, 9)] == pytest.approx(
        ceilings, rel=1e-5)


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.75, 0.999])
def test_jitter_keeps_each_wait_between_half_the_ceiling_and_all_of_it(jitter):
    backoff = Backoff(budget_s=1000, first_s=0.1, cap_s=2)
    for failures in range(1, 12):
        ceiling = min(2, 0.1 * 2 ** (failures - 1))
        assert ceiling / 2 <= backoff.wait(failures, 0, jitter) < ceiling + 1e-9


def test_the_last_wait_ends_on_the_budget_and_then_it_gives_up():
    backoff = Backoff(budget_s=3, first_s=0.2, cap_s=5)
    assert backoff.wait(6, elapsed_s=2.9, jitter=0.5) == pytest.approx(0.1)
    assert backoff.wait(7, elapsed_s=3.0, jitter=0.5) is None
    assert Backoff(budget_s=0).wait(1, 0, 0.5) is None  # a zero budget: one attempt, no retry


def test_a_huge_retry_number_does_not_overflow():
    assert Backoff(budget_s=10, cap_s=5).wait(10_000, 0, 0.0) == 2.5


class Clock:
    """Time that moves only when slept: retrying runs without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def flaky(errors: list[BaseException], result: str = "bytes"):
    def call() -> str:
        if errors:
            raise errors.pop(0)
        return result
    return call


def run(call, budget_s: float = 30.0, clock: Clock | None = None):
    clock = clock or Clock()
    return retrying("reading x in the originals store (s3://b/o)", call, Backoff(budget_s),
                    sleep=clock.sleep, clock=lambda: clock.now, jitter=lambda: 0.5)


def test_transient_errors_are_retried_until_the_call_succeeds():
    clock = Clock()
    errors = [ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
              OSError(errno.EBUSY, "Service Unavailable"), TimeoutError("read timed out")]
    assert run(flaky(errors), clock=clock) == "bytes"
    assert clock.sleeps == pytest.approx([0.15, 0.3, 0.6])


@pytest.mark.parametrize("error", [FileNotFoundError("gone"), PermissionError("denied"),
                                   OSError(errno.EINVAL, "bad request"), ValueError("a bug")])
def test_other_errors_are_raised_at_once(error):
    clock = Clock()
    with pytest.raises(type(error)):
        run(flaky([error]), clock=clock)
    assert clock.sleeps == []


def test_past_the_budget_it_fails_retryable_naming_the_operation_and_the_last_error():
    clock = Clock()
    errors = [ConnectionResetError(errno.ECONNRESET, "reset by peer")] * 100
    with pytest.raises(StorageUnavailable) as caught:
        run(flaky(list(errors)), budget_s=3.0, clock=clock)
    failure = caught.value
    assert isinstance(failure, Failed)
    assert (failure.reason, failure.retryable) == ("storage_unavailable", True)
    assert "reading x in the originals store (s3://b/o) failed" in failure.message
    assert "ConnectionResetError: [Errno 104] reset by peer" in failure.message
    assert sum(clock.sleeps) == pytest.approx(3.0)  # the whole budget, and no more
    assert failure.details["attempts"] == len(clock.sleeps) + 1 == 6
    assert failure.details["elapsed_s"] == pytest.approx(3.0)


def test_storage_unavailable_survives_pickling_between_workers():
    failure = StorageUnavailable("reading x failed", {"attempts": 3})
    copy = pickle.loads(pickle.dumps(failure))
    assert (copy.reason, copy.message, copy.retryable, copy.details) == (
        "storage_unavailable", "reading x failed", True, {"attempts": 3})


def client_error(status: int, code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject")


@pytest.mark.parametrize("error, expected", [
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (OSError(errno.EBUSY, "SlowDown"), True),  # s3fs's translation of 503 and SlowDown
    (OSError(errno.EREMOTEIO, "InternalError"), True),  # and of 500
    (OSError(errno.EIO, "502 Bad Gateway"), True),  # and of codes it does not know
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"), True),
    (botocore.exceptions.ConnectionClosedError(endpoint_url="http://s3"), True),
    (client_error(503, "SlowDown"), True),
    (client_error(400, "RequestTimeout"), True),
    (client_error(403, "AccessDenied"), False),
    (client_error(404, "NoSuchKey"), False),
    (FileNotFoundError(), False),
    (PermissionError(), False),
    (OSError(errno.EINVAL, "InvalidArgument"), False),
    (OSError(errno.EREMCHG, "PermanentRedirect"), False),
    (ValueError(), False),
    (Failed("storage_unavailable", "already given up", retryable=True), False),
])
def test_which_errors_are_transient(error, expected):
    assert transient(error) is expected


def test_the_budget_comes_from_settings_into_every_store(tmp_path):
    assert load_settings(environ={"MEDIAFARM_DATA_DIR": str(tmp_path)}).storage_retry_s == 30.0
    settings = load_settings(environ={"MEDIAFARM_DATA_DIR": str(tmp_path),
                                      "MEDIAFARM_STORAGE_RETRY_S": "4.5"})
    assert settings.storage_retry_s == 4.5
    assert {store.backoff.budget_s for store in open_stores(settings).values()} == {4.5}


def test_s3_stores_leave_retries_to_the_store_and_bound_their_waits():
    store = Store("originals", StoreConfig("s3://bucket/o", {"key": "k", "secret": "s",
                                                             "skip_instance_cache": True}))
    assert store.fs.retries == 1
    assert store.fs.config_kwargs == {"connect_timeout": 5, "read_timeout": 15, "retries": {
        "mode": "standard", "total_max_attempts": 3}}
    own = Store("originals", StoreConfig("s3://bucket/o", {
        "skip_instance_cache": True, "config_kwargs": {"read_timeout": 60}}))
    assert own.fs.config_kwargs["read_timeout"] == 60  # the store's options win
