"""Claims: an asset is worked on by one run at a time, whichever asked first.

The run that queues an asset claims it in the catalog (``Catalog.claim``): its
holder name and a lease expiry. A Farm is one holder; while it lives, a thread
renews its leases, and an asset's terminal write clears its claim. Another run
that wants the same asset skips it and waits for it to end (``await_held``),
so two ``mediafarm ingest`` of one folder do the work once and both report
every asset terminal. A run that crashed stops renewing: once its leases lapse,
the next run that wants those assets takes them over with a new attempt (the
catalog drops the late writes of older attempts).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from catalog import Catalog
from catalog.repository import TERMINAL, claim_is_live, utcnow
from catalog.records import AssetRequest

log = logging.getLogger(__name__)

# Long enough to ride out a catalog hiccup between renewals (every quarter lease),
# short enough that a crashed run's assets are taken over within about a minute.
CLAIM_LEASE_S = 60.0
POLL_S = 1.0

Start = Callable[[list[AssetRequest], dict[str, int]], None]


def new_holder() -> str:
    """A name for one run that says where it ran: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """Renews every claim of ``holder`` in a daemon thread; ``stop`` releases what is left."""

    def __init__(self, catalog: Catalog, holder: str, lease_s: float) -> None:
        self.catalog, self.holder, self.lease_s = catalog, holder, lease_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="mediafarm-claims",
                                        daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stopped.wait(self.lease_s / 4):
            try:
                self.catalog.renew_claims(self.holder, self.lease_s)
            except Exception:  # noqa: BLE001 - try again next round; the lease has slack
                log.warning("could not renew the claims of %s", self.holder, exc_info=True)

    def halt(self) -> None:
        """Stop renewing, and nothing else: what is held lapses in one lease."""
        self._stopped.set()

    def stop(self) -> None:
        self.halt()
        self._thread.join(timeout=5)  # a renewal under way cannot undo the release below
        try:
            self.catalog.release_claims(self.holder)
        except Exception:  # noqa: BLE001 - unreleased claims lapse on their own
            log.warning("could not release the claims of %s", self.holder, exc_info=True)


def await_held(catalog: Catalog, held: dict[str, AssetRequest], holder: str, lease_s: float,
               recipe_id: str, start: Start, job_id: str | None = None,
               poll_s: float = POLL_S) -> dict[str, str]:
    """Wait until some asset of ``held`` (held by other runs) ends or can be taken over.

    Ended assets leave ``held`` and are returned with their status; assets whose
    claim lapsed or was let go unfinished are claimed for ``holder`` and handed
    to ``start`` with their attempts, and leave ``held`` too.
    """
    while True:
        rows = catalog.assets(held)
        ended = {a: rows[a]["status"] for a in held if rows[a]["status"] in TERMINAL}
        for asset_id in ended:
            del held[asset_id]
        now = utcnow()
        lapsed = [request for asset_id, request in held.items()
                  if not claim_is_live(rows[asset_id], holder, now)]
        taken: dict[str, int] = {}
        if lapsed:
            taken = catalog.claim(lapsed, recipe_id, holder, lease_s, _unfinished,
                                  job_id).attempts
            for asset_id in taken:
                log.info("taking over %s: its run's claim lapsed", asset_id)
            start([held.pop(asset_id) for asset_id in taken], taken)
        if ended or taken:
            return ended
        time.sleep(poll_s)


def _unfinished(row: dict | None, _request: AssetRequest) -> bool:
    return row is None or row["status"] not in TERMINAL
