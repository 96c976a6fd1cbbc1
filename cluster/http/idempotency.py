"""Idempotency keys: a retried request with the same key gets the first answer again.

A key belongs to its owner. A request reserves its key before it stores or submits
anything, with an insert only one request can win (the primary key decides, on
PostgreSQL and SQLite alike); the others are told: the same key for a different
request is a conflict (409 ``idempotency_key_reused``), the same request while the
first is still running is 409 ``idempotency_key_in_progress`` with Retry-After, and
once the first has answered they get its answer. A request that fails gives its key
back, so a retry after an error is a new try.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from catalog.models import IdempotencyKey
from catalog.repository import utcnow
from cluster.http.errors import ApiError

# Checked by FastAPI on the header (422 invalid_idempotency_key, see errors.py).
KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,200}$"
PENDING, DONE = "pending", "done"
# A reservation this old was left by a server that died mid-request: the next try takes
# it over. Longer than any request runs (a full-size upload into the buffer included).
LEASE_S = 600
RETRY_AFTER_S = 1


def request_digest(method: str, path: str, what: object) -> str:
    """What identifies a request: method, path and its meaning (not its exact bytes)."""
    text = json.dumps([method, path, what], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Claim:
    """One request's hold on its owner's Idempotency-Key (``key`` None: no key, no-ops)."""

    def __init__(self, engine: Engine, owner: str, key: str | None) -> None:
        self.engine, self.owner, self.key = engine, owner, key
        self.digest: str | None = None
        self.stamp = None  # when this request reserved the key: which reservation is its own

    @property
    def held(self) -> bool:
        return self.stamp is not None

    def take(self, digest: str) -> dict | None:
        """Reserve the key for this request: None once held (go ahead); the stored answer
        when the same request was answered before; 409 while it runs, or for another request.
        """
        if self.key is None:
            return None
        table, now = IdempotencyKey.__table__, utcnow()
        mine = (IdempotencyKey.owner == self.owner, IdempotencyKey.key == self.key)
        with self.engine.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            # RETURNING says whether this insert won (rowcount is not reliable for DO NOTHING).
            won = conn.execute(insert(table).values(
                owner=self.owner, key=self.key, request_sha256=digest, state=PENDING,
                created_at=now).on_conflict_do_nothing(index_elements=["owner", "key"])
                .returning(IdempotencyKey.key)).first() is not None
            if not won:  # taken: over from a dead server's abandoned reservation, or not at all
                won = conn.execute(update(table).where(
                    *mine, IdempotencyKey.state == PENDING,
                    IdempotencyKey.created_at < now - timedelta(seconds=LEASE_S))
                    .values(request_sha256=digest, created_at=now)
                    .returning(IdempotencyKey.key)).first() is not None
            row = None if won else conn.execute(
                select(IdempotencyKey.request_sha256, IdempotencyKey.state,
                       IdempotencyKey.response).where(*mine)).first()
        if won:
            self.digest, self.stamp = digest, now
            return None
        if row is None:  # released between the insert and the read: try again
            return self.take(digest)
        if row.request_sha256 != digest:
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was already used for a different request")
        if row.state != DONE:
            raise ApiError(409, "idempotency_key_in_progress",
                           "a request with this Idempotency-Key is still being answered; "
                           f"retry in {RETRY_AFTER_S} s for its answer",
                           {"Retry-After": str(RETRY_AFTER_S)})
        return row.response

    def finish(self, response: dict) -> dict:
        """Store the answer of the request that holds the key; returns it."""
        if self.held:
            with self.engine.begin() as conn:
                conn.execute(update(IdempotencyKey.__table__).where(*self._own())
                             .values(state=DONE, response=response))
            self.stamp = None
        return response

    def release(self) -> None:
        """Give the key back after a failure (no-op unless this request holds it)."""
        if self.held:
            with self.engine.begin() as conn:
                conn.execute(delete(IdempotencyKey.__table__).where(*self._own()))
            self.stamp = None

    def _own(self) -> tuple:
        return (IdempotencyKey.owner == self.owner, IdempotencyKey.key == self.key,
                IdempotencyKey.state == PENDING, IdempotencyKey.request_sha256 == self.digest,
                IdempotencyKey.created_at == self.stamp)
