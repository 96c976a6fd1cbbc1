"""Ctrl-C: workers that leave stopping to the farm, and a summary of what had finished."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while waiting for assets, with what had finished by then."""

    def __init__(self, done: int, total: int, counts: Counter) -> None:
        super().__init__(done, total, counts)
        self.done, self.total, self.counts = done, total, counts


def summary(interrupt: KeyboardInterrupt) -> str:
    """One line for people: what finished, and that running the command again resumes."""
    if isinstance(interrupt, Interrupted):
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(interrupt.counts.items()))
        earlier = interrupt.done - sum(interrupt.counts.values())
        if earlier:
            by_status = ", ".join(filter(None, [f"{earlier} done before", by_status]))
        done = f"{interrupt.done} of {interrupt.total} assets finished" + (
            f" ({by_status})" if by_status else "")
    else:
        done = "no asset had finished"
    return (f"interrupted: {done}; the cluster this command started is stopped. Run the same "
            "command again to do the rest: finished assets are not redone")


@contextmanager
def workers_ignore_ctrl_c() -> Iterator[None]:
    """Processes started by threads started inside this block never see SIGINT.

    A terminal's Ctrl-C goes to every process in its foreground group, so each worker
    of a LocalCluster would die mid-task with a KeyboardInterrupt traceback of its own
    while the command is still stopping them in order. Threads inherit their creator's
    signal mask and processes their thread's: Dask's loop thread, started in here,
    passes SIGINT blocked to every worker it starts, restarts included. The main thread
    gets the signal once the block ends, as a KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # multiprocessing starts its resource tracker (at the first queue or process) with
    # SIGINT blocked, then unblocks it in that thread: that would undo this block in Dask's
    # loop thread, so it is started here first.
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
