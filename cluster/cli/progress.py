"""The progress every long command shows: a live bar on a terminal, plain lines in a log."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cluster.cli.report import human_seconds

# A log (stderr not a terminal) gets a line this often, besides the first and the last.
PLAIN_INTERVAL_S = 10.0


class CommandProgress:
    """Call with (done, total, counts) as work ends; use as a context manager.

    On a terminal, rich draws one bar with done/total, rate, ETA and counts by
    status; elsewhere a line with the same fields goes out at the start, every
    ``interval`` seconds and at the end, so logs and CI show a long run moving.
    """

    def __init__(self, what: str, out: TextIO | None = None, *, interval: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, live: bool | None = None) -> None:
        self.what, self.out = what, out or sys.stderr
        self.interval, self.clock = interval, clock
        self.live = self.out.isatty() if live is None else live
        self.started = clock()
        self.last_line: float | None = None
        self.state: tuple[int, int | None, Counter] | None = None
        self.printed = True
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> "CommandProgress":
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
                TextColumn("{task.fields[counts]}"),
                console=Console(file=self.out, force_terminal=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=None, rate="", eta="?", counts="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.state and not self.printed:
            self._print_line(*self.state)

    def __call__(self, done: int, total: int | None, counts: Counter) -> None:
        self.state, self.printed = (done, total, Counter(counts)), False
        if self._bar is not None:
            rate, eta = self._rate_and_eta(done, total)
            self._bar.update(self._task, completed=done, total=total, rate=f"{rate:.1f}/s",
                             eta=eta, counts=_counts(counts))
            return
        now = self.clock()
        if self.last_line is None or now - self.last_line >= self.interval or done == total:
            self.last_line = now
            self._print_line(done, total, counts)

    def _print_line(self, done: int, total: int | None, counts: Counter) -> None:
        rate, eta = self._rate_and_eta(done, total)
        print(f"{self.what}: {done}/{'?' if total is None else total} ({_counts(counts)}), "
              f"{rate:.1f} assets/s, ETA {eta}", file=self.out, flush=True)
        self.printed = True

    def _rate_and_eta(self, done: int, total: int | None) -> tuple[float, str]:
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if total is not None and done >= total:
            return rate, "0s"
        if total is None or rate <= 0:
            return rate, "?"
        return rate, human_seconds(round((total - done) / rate))


def _counts(counts: Counter) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "none yet"
