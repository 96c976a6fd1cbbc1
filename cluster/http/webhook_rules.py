"""Completion webhooks, the pure part: which callback URLs are allowed, the payload, the
signature, and the retry schedule. ``cluster.http.webhooks`` does the sending.

Callback URLs follow the same rule as sources: the farm must not be made to reach what
it should not. Only http and https; no credentials, no fragment; and either the host is
on ``MEDIAFARM_WEBHOOK_ALLOWED_HOSTS`` (named by the operator, so any address it has is
allowed, loopback included) or, when that list is empty, every address the host resolves
to is public (never loopback, private, link-local, multicast or reserved).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from urllib.parse import urlsplit

MAX_URL = 2000
SIGNATURE_HEADER = "Mediafarm-Signature"

Resolve = Callable[[str, int], Iterable[str]]  # (host, port) -> its addresses


class NotAllowed(ValueError):
    """The callback URL is refused; the message says why, for the client."""


def check_callback_url(url: object, allowed_hosts: Iterable[str], resolve: Resolve) -> str:
    """``url`` when the farm may POST to it, else :class:`NotAllowed`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or any(
            ord(c) < 33 or ord(c) == 127 for c in url):
        raise NotAllowed("callback_url must be an http or https URL")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise NotAllowed(f"callback_url is not a URL: {exc}") from exc
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise NotAllowed("callback_url must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise NotAllowed("callback_url may not carry credentials or a fragment")
    allowed = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
    if allowed:
        if host not in allowed:
            raise NotAllowed("callback_url's host is not on this farm's list of webhook hosts")
        return url
    try:
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
    except (OSError, ValueError) as exc:
        raise NotAllowed(f"callback_url's host does not resolve: {exc}") from exc
    if not addresses or not all(a.is_global for a in addresses):
        raise NotAllowed("callback_url's host has a loopback, private or reserved address")
    return url


def event_name(subject: str, status: str) -> str:
    """``asset.ready``, ``asset.rejected``, ``asset.failed``, ``job.finished``, ``job.failed``."""
    return f"{subject}.{status}"


def payload(delivery: dict) -> tuple[str, bytes]:
    """The event name and the JSON body for a due delivery row (``catalog.webhooks.due``)."""
    subject = "asset" if delivery["asset_id"] else "job"
    event = event_name(subject, delivery["subject_status"])
    ended: datetime | None = delivery["ended_at"]
    body = {"id": delivery["id"], "event": event,
            "asset_id": delivery["asset_id"], "job_id": delivery["job_id"],
            "status": delivery["subject_status"],
            "reason": delivery["reason"] if subject == "asset" else None,
            "renditions": delivery["renditions"] if subject == "asset" else None,
            "sha256": delivery["sha256"] if subject == "asset" else None,
            "at": ended.isoformat() if ended else None}
    return event, json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Mediafarm-Signature`` value: ``t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: the signature matches and its time is within ``tolerance_s``."""
    fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, body, timestamp).rpartition("v1=")[2]
    return (abs(now - timestamp) <= tolerance_s
            and hmac.compare_digest(expected, fields.get("v1", "")))


def delivered(status_code: int) -> bool:
    """Only a 2xx is delivered: a redirect is never followed, and counts as a failure."""
    return 200 <= status_code < 300


def next_delay(attempts: int, base_s: float, cap_s: float = 3600.0) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling from ``base_s``."""
    return min(cap_s, base_s * 2 ** max(0, attempts - 1))
