"""Completion webhooks in the catalog: owners' signing secrets and the delivery log.

The log is also the queue: a ``pending`` row is sent once its asset or job has ended and
its ``next_attempt_at`` has come, so a server restart loses no delivery. Sending, signing
and the retry schedule live in ``cluster.http.webhooks``; this module only reads and writes.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from catalog.models import Asset, Job, Rendition, WebhookDelivery, WebhookSecret

ASSET_ENDS = ("ready", "rejected", "failed")
JOB_ENDS = ("finished", "failed")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def owner_secret(engine: Engine, owner: str) -> str:
    """``owner``'s signing secret, made on first use (two first uses at once agree)."""
    query = select(WebhookSecret.secret).where(WebhookSecret.owner == owner)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is not None:
        return found
    try:
        with engine.begin() as conn:
            conn.execute(insert(WebhookSecret).values(
                owner=owner, secret=f"whsec_{secrets.token_urlsafe(32)}", created_at=utcnow()))
    except IntegrityError:
        pass  # another request made it first: use theirs
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def add_delivery(engine: Engine, owner: str, url: str, *, asset_id: str | None = None,
                 job_id: str | None = None) -> str:
    """Log a callback to send once the asset (or job) ends; returns the delivery's id."""
    delivery_id = str(uuid.uuid4())
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(WebhookDelivery).values(
            id=delivery_id, owner=owner, asset_id=asset_id, job_id=job_id, url=url,
            status="pending", attempts=0, next_attempt_at=now, created_at=now, updated_at=now))
    return delivery_id


def due(engine: Engine, now: datetime, limit: int = 50) -> list[dict]:
    """Pending deliveries whose asset or job has ended and whose next attempt has come,
    with what their payload says: the subject's status, reason, digest and end time."""
    renditions = (select(func.count()).select_from(Rendition)
                  .where(Rendition.source_sha256 == Asset.sha256,
                         Rendition.recipe_id == Asset.recipe_id)
                  .correlate(Asset).scalar_subquery())
    query = (select(WebhookDelivery.__table__,
                    func.coalesce(Asset.status, Job.status).label("subject_status"),
                    Asset.reason, Asset.sha256,
                    func.coalesce(Asset.updated_at, Job.updated_at).label("ended_at"),
                    renditions.label("renditions"))
             .outerjoin(Asset, Asset.id == WebhookDelivery.asset_id)
             .outerjoin(Job, Job.id == WebhookDelivery.job_id)
             .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                    or_(and_(WebhookDelivery.asset_id.is_not(None),
                             Asset.status.in_(ASSET_ENDS)),
                        and_(WebhookDelivery.job_id.is_not(None), Job.status.in_(JOB_ENDS))))
             .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def lease(engine: Engine, delivery: dict, seconds: float) -> bool:
    """Take ``delivery`` for one attempt: push its next attempt ``seconds`` on, if it is still
    as read. False when another server process took it first."""
    with engine.begin() as conn:
        taken = conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery["id"], WebhookDelivery.status == "pending",
                   WebhookDelivery.attempts == delivery["attempts"],
                   WebhookDelivery.next_attempt_at == delivery["next_attempt_at"])
            .values(next_attempt_at=utcnow() + timedelta(seconds=seconds)))
    return taken.rowcount == 1


def record_attempt(engine: Engine, delivery_id: str, *, event: str, status: str,
                   status_code: int | None, error: str | None,
                   next_attempt_at: datetime | None) -> None:
    """One attempt's outcome: ``delivered``, ``given_up``, or ``pending`` until ``next_attempt_at``."""
    with engine.begin() as conn:
        conn.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
            .values(event=event, status=status, attempts=WebhookDelivery.attempts + 1,
                    last_status_code=status_code, last_error=error,
                    next_attempt_at=next_attempt_at, updated_at=utcnow()))


def deliveries(engine: Engine, owner: str, *, asset_id: str | None = None,
               job_id: str | None = None) -> list[dict]:
    """An owner's delivery log for one asset or job, oldest first."""
    query = select(WebhookDelivery.__table__).where(WebhookDelivery.owner == owner)
    if asset_id is not None:
        query = query.where(WebhookDelivery.asset_id == asset_id)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(WebhookDelivery.created_at))]
