"""Completion webhooks, the sending: one round takes the due deliveries from the catalog's
log, POSTs each signed payload once, and writes down how it went.

At least once: a delivery stays ``pending`` in the catalog, with the time of its next
attempt, until a receiver answers 2xx (``delivered``) or the attempts are spent
(``given_up``); the server's delivery loop (``cluster.http.app``) runs a round every
``MEDIAFARM_WEBHOOK_INTERVAL`` seconds, so a restart loses nothing. The retry schedule is
persisted rather than kept in a tenacity loop for that reason (``webhook_rules.next_delay``).
Redirects are never followed (httpx ``follow_redirects=False``): a 3xx is a failed attempt,
so a receiver cannot send the farm off the allowed hosts.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import timedelta

import httpx
from sqlalchemy import Engine

from catalog import webhooks as log_table
from cluster.http.errors import ApiError
from cluster.http.webhook_rules import (SIGNATURE_HEADER, NotAllowed, Resolve,
                                        check_callback_url, delivered, next_delay, payload,
                                        signature)

log = logging.getLogger(__name__)


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now (the system resolver)."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def client(timeout_s: float) -> httpx.Client:
    """The sending client: short timeouts, no redirects, no proxies from the environment."""
    return httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                        trust_env=False, headers={"User-Agent": "mediafarm-webhooks/1"})


def deliver_round(engine: Engine, http: httpx.Client, *, allowed_hosts: tuple[str, ...],
                  max_attempts: int, retry_base_s: float, lease_s: float,
                  resolver: Resolve = resolve) -> int:
    """Send every due delivery once; returns how many were tried."""
    tried = 0
    for row in log_table.due(engine, log_table.utcnow()):
        if not log_table.lease(engine, row, lease_s):
            continue  # another server process has it
        tried += 1
        _attempt(engine, http, row, allowed_hosts, max_attempts, retry_base_s, resolver)
    return tried


def _attempt(engine: Engine, http: httpx.Client, row: dict, allowed_hosts: tuple[str, ...],
             max_attempts: int, retry_base_s: float, resolver: Resolve) -> None:
    event, body = payload(row)
    status_code: int | None = None
    error: str | None = None
    try:
        # Checked again when sent: the host's addresses may have changed since the submit.
        check_callback_url(row["url"], allowed_hosts, resolver)
        secret = log_table.owner_secret(engine, row["owner"])
        answer = http.post(row["url"], content=body, headers={
            "Content-Type": "application/json", "Mediafarm-Event": event,
            "Mediafarm-Delivery": row["id"],
            SIGNATURE_HEADER: signature(secret, body, int(time.time()))})
        status_code = answer.status_code
        if not delivered(status_code):
            error = (f"redirect to {answer.headers.get('location', '?')[:200]} not followed"
                     if answer.is_redirect else f"HTTP {status_code}")
    except NotAllowed as exc:
        error = f"not allowed: {exc}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    attempts = row["attempts"] + 1
    if error is None:
        status, when = "delivered", None
    elif attempts >= max_attempts:
        status, when = "given_up", None
        log.warning("webhook %s to %s given up after %d attempts: %s", row["id"], row["url"],
                    attempts, error)
    else:
        status = "pending"
        when = log_table.utcnow() + timedelta(seconds=next_delay(attempts, retry_base_s))
    log_table.record_attempt(engine, row["id"], event=event, status=status,
                             status_code=status_code, error=error, next_attempt_at=when)


def allowed_callback(url: object, allowed_hosts: tuple[str, ...],
                     resolver: Resolve = resolve) -> str:
    """``url`` checked at submit, else 422 ``callback_not_allowed`` (may resolve the host:
    call it from a worker thread)."""
    try:
        return check_callback_url(url, allowed_hosts, resolver)
    except NotAllowed as exc:
        raise ApiError(422, "callback_not_allowed", str(exc)) from exc
