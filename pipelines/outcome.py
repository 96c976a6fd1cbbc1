"""How a stage says an asset cannot go on: rejected (its fault) or failed (ours)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    REJECTED = "rejected"
    FAILED = "failed"


class StageStop(Exception):
    """Raised by a stage to end an asset's run with a terminal status and a reason.

    ``reason`` is a stable machine-readable code (``infected``, ``corrupt``...);
    ``message`` is a sentence for people.
    """

    status: Status

    def __init__(self, reason: str, message: str, *, retryable: bool = False,
                 details: dict | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.details = details or {}

    def __reduce__(self):
        # Exceptions pickle as cls(*args) by default, which loses the keywords; a stop
        # raised in one Dask task (a chunk's encode) is unpickled by another.
        return _rebuild, (type(self), self.reason, self.message, self.retryable, self.details)


def _rebuild(cls: type, reason: str, message: str, retryable: bool, details: dict) -> StageStop:
    stop = StageStop.__new__(cls)
    StageStop.__init__(stop, reason, message, retryable=retryable, details=details)
    return stop


class Rejected(StageStop):
    """The input is unacceptable: infected, unsupported, over a limit, corrupt."""

    status = Status.REJECTED


class Failed(StageStop):
    """The farm could not finish: a service was down or something broke inside."""

    status = Status.FAILED


# How an exception that no stage turned into a StageStop ends its asset: failed, internal_error,
# and retryable only when a retry could give another answer. Stages are functions of their
# bytes and parameters, so the same bytes through the same code raise the same error again:
# an error that says a value, a type, a lookup or an assumption was wrong is deterministic and
# never retryable (ValueError, which covers UnicodeError and decoders' own such as PyAV's
# InvalidDataError; TypeError, LookupError, ArithmeticError, AttributeError, AssertionError,
# NotImplementedError, RecursionError). What depends on the world (OSError: files, sockets,
# timeouts, stores; MemoryError on a busy worker; a service driver's errors) and anything
# that cannot be placed is retryable.
DETERMINISTIC_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, AttributeError,
                        AssertionError, NotImplementedError, RecursionError)
MESSAGE_CHARS = 1000  # a cause is kept whole for people, up to this many characters


def unexpected(error: BaseException) -> Failed:
    """The Failed that an exception no stage expected ends its asset with (see above)."""
    return Failed("internal_error", clip(f"{type(error).__name__}: {error}"),
                  retryable=not isinstance(error, DETERMINISTIC_ERRORS))


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` in at most ``limit`` characters; a longer one loses its middle, since the
    cause of an error is as often at its end (the outermost layer) as at its start."""
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]} … {text[len(text) - (limit - 3 - half):]}"


@dataclass(frozen=True)
class Stop:
    """A picklable record of a StageStop, passed down the graph to the record stage."""

    stage: str
    status: Status
    reason: str
    message: str
    retryable: bool = False

    @classmethod
    def from_error(cls, stage: str, error: StageStop) -> "Stop":
        return cls(stage, error.status, error.reason, error.message, error.retryable)
