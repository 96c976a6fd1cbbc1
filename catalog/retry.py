"""Riding out a lost or restarting database server: retry whole catalog transactions.

Every catalog write is an idempotent upsert in one transaction, so a transaction
cut off because the server went away can simply run again: if it had committed
before the reply was lost, running it again changes nothing. Only errors that
mean "connection lost / server not accepting connections" are retried; a
constraint violation or a bug is raised at once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import tenacity
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_S = 60.0
# 57P01 admin_shutdown ("terminating connection due to administrator command"),
# 57P02 crash_shutdown, 57P03 cannot_connect_now ("the database system is starting
# up" / "is shutting down"). Class 08 is "connection exception" as a whole.
SERVER_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


class CatalogUnavailable(RuntimeError):
    """The catalog's server stayed unreachable for the whole retry budget."""


def is_disconnect(error: BaseException) -> bool:
    """True when ``error`` means the server went away or does not accept connections yet.

    SQLAlchemy's own verdict (``connection_invalidated``) counts; otherwise the
    driver's error decides: a psycopg ``OperationalError`` raised by libpq itself
    (no SQLSTATE: refused, reset, "server closed the connection unexpectedly"), or
    one the server sent with a connection-exception or shutdown/start-up SQLSTATE.
    Other operational errors (a statement timeout, a lock timeout) are not retried.
    """
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in SERVER_GOING_AWAY


@dataclass
class RetryStats:
    """What the retries of one catalog have cost so far (per process)."""

    retries: int = 0  # attempts that failed with a lost server and were run again
    recovered: int = 0  # calls that succeeded after at least one retry
    gave_up: int = 0  # calls that ran out of budget (CatalogUnavailable)
    waited_s: float = 0.0  # total time calls spent between their first failure and the end
    longest_s: float = 0.0  # the longest such wait of a single call


@dataclass
class Retry:
    """Exponential backoff with jitter (tenacity), bounded by a total budget per call.

    The budget counts from a call's first failure, so a long transaction that
    ran fine before the server went away does not eat into it. Calls nested in
    a retried call (in the same thread) are not retried on their own: the
    outermost call runs again whole.
    """

    server: str
    budget_s: float = DEFAULT_RETRY_S
    first_delay_s: float = 0.05
    max_delay_s: float = 1.0
    stats: RetryStats = field(default_factory=RetryStats)
    _inside: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if getattr(self._inside, "active", False):
            return fn(*args, **kwargs)
        self._inside.active = True
        try:
            return self._call(fn, *args, **kwargs)
        finally:
            self._inside.active = False

    def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        first_failure: float | None = None

        def waited() -> float:
            return time.monotonic() - first_failure

        def failed(state: tenacity.RetryCallState) -> None:
            nonlocal first_failure
            if first_failure is None:
                first_failure = state.outcome_timestamp
                log.warning("catalog %s unavailable (%s); retrying for up to %.0f s",
                            self.server, _first_line(state.outcome.exception()), self.budget_s)

        def give_up(state: tenacity.RetryCallState):
            error, spent = state.outcome.exception(), self._settle(waited())
            self.stats.gave_up += 1
            raise CatalogUnavailable(
                f"the catalog at {self.server} is unavailable: gave up after "
                f"{spent:.1f} s and {state.attempt_number} attempts (budget {self.budget_s:g} s, "
                f"MEDIAFARM_CATALOG_RETRY_S); last error: {_first_line(error)}") from error

        def count_retry(state: tenacity.RetryCallState) -> None:
            self.stats.retries += 1

        # "Equal jitter": half the exponential step fixed, half random, so that many
        # workers coming back at once do not knock in step; the last wait ends on the budget.
        half_first, half_max = self.first_delay_s / 2, self.max_delay_s / 2
        jittered = (tenacity.wait_exponential(multiplier=half_first, max=half_max)
                    + tenacity.wait_random_exponential(multiplier=half_first, max=half_max))
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_disconnect), after=failed,
            stop=lambda state: waited() >= self.budget_s,
            wait=lambda state: max(0.0, min(jittered(state), self.budget_s - waited())),
            before_sleep=count_retry, retry_error_callback=give_up)
        result = retrying(fn, *args, **kwargs)
        if first_failure is not None:
            spent = self._settle(waited())
            self.stats.recovered += 1
            log.warning("catalog %s reachable again after %.1f s and %d retries",
                        self.server, spent, retrying.statistics["attempt_number"] - 1)
        return result

    def _settle(self, waited: float) -> float:
        self.stats.waited_s += waited
        self.stats.longest_s = max(self.stats.longest_s, waited)
        return waited


def retried(method: Callable[..., T]) -> Callable[..., T]:
    """Run a method of an object with a ``retry`` attribute through that ``Retry``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return self.retry.call(method, self, *args, **kwargs)
    return wrapper


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
