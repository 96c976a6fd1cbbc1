"""How store operations ride out transient errors: the policy (``Backoff``), which errors
are transient (``transient``), and ``retrying``, which runs a call through tenacity until
the budget is spent and then raises ``StorageUnavailable`` (a retryable ``Failed``).

Underneath, on S3, s3fs's own retry loop is off and botocore makes at most three
requests per call (its ``standard`` mode), so the budget, not the libraries, decides
when to give up.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import botocore.exceptions
import tenacity
from botocore.parsers import ResponseParserError

from cluster import metrics
from pipelines.outcome import Failed

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How long store IO keeps trying through transient errors: jittered, exponential, bounded.

    The ceiling of each wait doubles from ``first_s`` up to ``cap_s``; the wait itself is
    drawn between half the ceiling and all of it, so workers hit by one outage spread
    out, yet none hammers the endpoint. Attempts stop once ``budget_s`` has passed since
    the first began; the last wait is cut short to end on the budget, for one last try.
    tenacity runs the attempts (``retrying``) and calls ``wait`` as its wait strategy: a
    pure function of the random draw, so the policy is tested without clock or chance.
    """

    budget_s: float = 30.0
    first_s: float = 0.2
    cap_s: float = 5.0

    def wait(self, failures: int, elapsed_s: float, jitter: float) -> float | None:
        """Seconds to sleep after ``failures`` failed attempts (1, 2...), or None: give up.

        ``elapsed_s`` is the time since the first attempt began and ``jitter`` a draw
        from [0, 1); no clock, no randomness inside, so the policy is testable as is.
        """
        left = self.budget_s - elapsed_s
        if left <= 0:
            return None
        ceiling = min(self.cap_s, self.first_s * 2 ** min(failures - 1, 32))
        return min(left, ceiling * (1 + jitter) / 2)


class StorageUnavailable(Failed):
    """A store kept failing with transient errors for its whole retry budget."""

    def __init__(self, message: str, details: dict) -> None:
        super().__init__("storage_unavailable", message, retryable=True, details=details)


# s3fs turns S3 error codes into OSErrors by errno; these say the request itself is wrong.
_PERMANENT_ERRNOS = frozenset({errno.EINVAL, errno.EPERM, errno.EACCES, errno.ENOSYS,
                               errno.EMSGSIZE, errno.ENAMETOOLONG, errno.EROFS,
                               errno.ENOTEMPTY, errno.EREMCHG})
_RETRYABLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                              "TooManyRequests", "TooManyRequestsException", "ServiceUnavailable",
                              "InternalError", "RequestLimitExceeded"})


def transient(error: BaseException) -> bool:
    """Whether a storage error may go away by itself: lost or refused connections,
    timeouts, HTTP 5xx and throttling. Missing objects, refused permissions and
    malformed requests are not: retrying them only delays the answer.
    """
    if isinstance(error, (FileNotFoundError, FileExistsError, PermissionError,
                          IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(error, botocore.exceptions.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or error.response.get("Error", {}).get(
            "Code") in _RETRYABLE_CODES
    if isinstance(error, aiohttp.ClientResponseError):
        return error.status >= 500 or error.status == 429
    if isinstance(error, (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError,
                          botocore.exceptions.IncompleteReadError, ResponseParserError,
                          aiohttp.ClientError)):
        return True
    if isinstance(error, OSError):  # ConnectionError, TimeoutError, s3fs's EBUSY/EREMOTEIO/EIO
        return error.errno not in _PERMANENT_ERRNOS
    return False


def retrying(operation: str, call: Callable[[], T], backoff: Backoff, *, store: str = "other",
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic,
             jitter: Callable[[], float] = random.random) -> T:
    """``call()``, retried by tenacity through transient errors (see ``transient``) as
    ``backoff`` says.

    Other errors are raised at once. When the budget is spent, raises
    ``StorageUnavailable`` naming ``operation``, the attempts, the time and the last error.
    Each retry and each giving up is counted under ``store`` (a store's name, ``source``;
    see ``cluster.metrics``).
    """
    start = clock()

    def elapsed() -> float:
        return clock() - start

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception()
        metrics.store_retry(store)
        log.info("%s: attempt %d: %s: %s; again in %.2f s", operation, state.attempt_number,
                 type(error).__name__, error, state.next_action.sleep)

    def give_up(state: tenacity.RetryCallState):
        error, spent = state.outcome.exception(), elapsed()
        text = f"{type(error).__name__}: {error}"
        metrics.store_gave_up(store)
        raise StorageUnavailable(
            f"{operation} failed {state.attempt_number} times over {spent:.1f} s (budget "
            f"{backoff.budget_s:g} s); last error: {text}",
            {"operation": operation, "attempts": state.attempt_number,
             "elapsed_s": round(spent, 3), "error": text}) from error

    retried = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient), sleep=sleep,
        stop=lambda state: elapsed() >= backoff.budget_s,
        wait=lambda state: backoff.wait(state.attempt_number, elapsed(), jitter()) or 0.0,
        before_sleep=log_retry, retry_error_callback=give_up)
    result = retried(call)
    attempts = retried.statistics["attempt_number"]
    if attempts > 1:
        log.warning("%s succeeded on attempt %d after %.1f s", operation, attempts, elapsed())
    return result
