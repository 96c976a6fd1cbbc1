"""Bearer tokens of the HTTP endpoint: stored hashed, scoped, revocable, rate limited.

A token is shown once, when it is made; the catalog keeps only its SHA-256, the
owner it acts for and its scopes (``submit``, ``read``, ``admin``; ``admin``
includes the other two).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from catalog.models import ApiToken
from catalog.repository import utcnow

SCOPES = ("submit", "read", "admin")
TOKEN_PREFIX = "mf_"
# What create_token makes: the prefix and 32 random bytes in URL-safe base64 (43 characters).
_TOKEN_SHAPE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    token_id: str
    owner: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes are a comma-separated subset of {', '.join(SCOPES)}, "
                         f"not {text!r}")
    return scopes


def create_token(engine: Engine, owner: str, scopes: list[str]) -> tuple[str, str]:
    """Make a token for ``owner``; returns (token id, the token itself, never stored)."""
    if not owner or len(owner) > 200:
        raise ValueError("an owner is a non-empty name of at most 200 characters")
    scopes = parse_scopes(",".join(scopes))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(ApiToken.__table__.insert().values(
            id=token_id, token_sha256=token_digest(token), owner=owner, scopes=scopes))
    return token_id, token


def revoke_token(engine: Engine, token_id: str) -> bool:
    """Revoke a token by id; True if it was live."""
    with engine.begin() as conn:
        result = conn.execute(update(ApiToken.__table__)
                              .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                              .values(revoked_at=utcnow()))
    return result.rowcount > 0


def list_tokens(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(ApiToken.id, ApiToken.owner, ApiToken.scopes,
                                   ApiToken.created_at, ApiToken.revoked_at)
                            .order_by(ApiToken.created_at))
        return [dict(row._mapping) for row in rows]


def authenticate(engine: Engine, token: str) -> Principal | None:
    """The live token's principal, or None for an unknown or revoked token.

    A token that create_token cannot have made is refused without a catalog query.
    """
    if not _TOKEN_SHAPE.fullmatch(token):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(ApiToken.id, ApiToken.owner, ApiToken.scopes)
                           .where(ApiToken.token_sha256 == token_digest(token),
                                  ApiToken.revoked_at.is_(None))).first()
    if row is None:
        return None
    return Principal(row.id, row.owner, frozenset(row.scopes or ()))


class RateLimiter:
    """A token bucket per key (an API token, a client address), in this process's memory.

    Each key may make ``burst`` requests at once and ``rate`` a second after
    that. ``take`` answers 0 when the request may go ahead, else the seconds to
    wait before retrying; ``wait`` answers the same without taking anything.
    """

    PRUNE_AT = 100_000  # keys held before full buckets (the same as no entry) are dropped

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()
        self._prune_at = self.PRUNE_AT

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def take(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            tokens = self._tokens(key, now)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0
            self._buckets[key] = (tokens, now)
            return self._seconds_to_one(tokens)

    def wait(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens = self._tokens(key, now)
        return 0 if tokens >= 1 else self._seconds_to_one(tokens)

    def _seconds_to_one(self, tokens: float) -> int:
        return max(1, math.ceil((1 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        # Many addresses (IPv6 has plenty) must not grow the table without end.
        self._buckets = {k: v for k, v in self._buckets.items() if self._tokens(k, now) < self.burst}
        self._prune_at = max(self.PRUNE_AT, 2 * len(self._buckets))
