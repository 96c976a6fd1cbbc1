"""Idempotency keys: a retried request with the same key gets the first answer again.

A key belongs to its owner. The first successful answer is stored with a digest
of what was asked; the same key with a different request is a conflict (409).
"""

from __future__ import annotations

import hashlib
import json
import re

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from catalog.models import IdempotencyKey
from cluster.http_errors import ApiError

_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,200}")


def parse_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise ApiError(422, "invalid_idempotency_key",
                       "Idempotency-Key is 1 to 200 letters, digits or . _ : -")
    return value


def request_digest(method: str, path: str, what: object) -> str:
    """What identifies a request: method, path and its meaning (not its exact bytes)."""
    text = json.dumps([method, path, what], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def replay(engine: Engine, owner: str, key: str, digest: str) -> dict | None:
    """The stored answer for this key, None if new; 409 if it was used for another request."""
    with engine.connect() as conn:
        row = conn.execute(select(IdempotencyKey.request_sha256, IdempotencyKey.response)
                           .where(IdempotencyKey.owner == owner,
                                  IdempotencyKey.key == key)).first()
    if row is None:
        return None
    if row.request_sha256 != digest:
        raise ApiError(409, "idempotency_key_reused",
                       "this Idempotency-Key was already used for a different request")
    return row.response


def remember(engine: Engine, owner: str, key: str, digest: str, response: dict) -> dict:
    """Store the answer unless a racing request stored one first; returns the stored one."""
    table = IdempotencyKey.__table__
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(table).values(owner=owner, key=key, request_sha256=digest,
                                                  response=response)
                     .on_conflict_do_nothing(index_elements=["owner", "key"]))
    stored = replay(engine, owner, key, digest)
    return stored if stored is not None else response
