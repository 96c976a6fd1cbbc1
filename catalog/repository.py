"""The catalog repository: every write is an idempotent upsert, so any stage can run again."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Table, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from catalog.db import connect, upgrade
from catalog.gc import pin
from catalog.metadata_columns import FILLED, with_columns
from catalog.retry import DEFAULT_RETRY_S, Retry, retried
from catalog.records import AssetRequest, RenditionRecord, StageRecord
from catalog.models import (Asset, AssetVersion, Base, Blob, Job, PerceptualHash, Recipe, Rendition,
                            StageRun)


TERMINAL = ("ready", "rejected", "failed")
# Rounds of read-then-claim for assets another writer changed in between; what is
# still contested after them is reported held, and its holder's run awaited.
CLAIM_ROUNDS = 5


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time the catalog writes is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def claim_is_live(asset: dict, holder: str, now: datetime) -> bool:
    """True when another run than ``holder`` holds ``asset`` and its lease has not lapsed."""
    return bool(asset["claim_holder"] not in (None, holder) and asset["claim_expires_at"]
                and _aware(asset["claim_expires_at"]) > now)


# An asset that ends lets go of its claim: the next run may take it at once (e.g. --force).
_RELEASED = {"claim_holder": None, "claim_expires_at": None}


@dataclass(frozen=True)
class Claim:
    """What ``Catalog.claim`` found: the assets now held, and the ones left alone."""

    attempts: dict[str, int]          # claimed: each asset's new attempt
    held: dict[str, str | None]       # held by another live run (its holder, None if racing)
    unwanted: list[str]               # not wanted (e.g. finished already): untouched


class Catalog:
    """The catalog's reads and writes, each one transaction.

    A transaction cut off because the server went away (a restart, a failover) is
    run again whole, with backoff, for up to ``retry_s`` seconds from its first
    failure; then ``CatalogUnavailable`` is raised. Writes are idempotent upserts,
    so a transaction that committed before its reply was lost can run again.
    """

    def __init__(self, url: str, retry_s: float = DEFAULT_RETRY_S) -> None:
        self.url = url
        self.engine = connect(url)
        self.retry = Retry(self.engine.url.render_as_string(hide_password=True), retry_s)

    @retried
    def upgrade(self) -> None:
        """Bring the schema up to date (Alembic), riding out a server that is restarting."""
        upgrade(self.url)

    # -- generic ------------------------------------------------------------------------------

    def _upsert(self, conn: Connection, table: Table, rows: Sequence[dict],
                keys: Sequence[str], update_columns: Sequence[str] = ()) -> None:
        # One executemany per shape of row: SQLAlchemy folds it into multi-row
        # INSERTs ("insertmanyvalues") from one cached statement, about eight times
        # the rate of compiling a fresh 500-row VALUES statement per chunk.
        if not rows:
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        shapes: dict[tuple, list[dict]] = {}
        for row in rows:
            shapes.setdefault(tuple(sorted(row)), []).append(row)
        for group in shapes.values():
            statement = dialect.insert(table)
            if update_columns:
                statement = statement.on_conflict_do_update(
                    index_elements=list(keys),
                    set_={c: statement.excluded[c] for c in update_columns})
            else:
                statement = statement.on_conflict_do_nothing(index_elements=list(keys))
            conn.execute(statement, group)

    @retried
    def row_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in Base.metadata.sorted_tables}

    # -- recipes and assets -------------------------------------------------------------------

    @retried
    def ensure_recipe(self, recipe_id: str, name: str, definition: dict) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, Recipe.__table__,
                         [{"id": recipe_id, "name": name, "definition": definition}], ["id"])

    @retried
    def assets(self, asset_ids: Iterable[str]) -> dict[str, dict]:
        ids = list(asset_ids)
        found: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(select(Asset.__table__).where(Asset.id.in_(ids[start:start + 500])))
                found.update({row.id: dict(row._mapping) for row in rows})
        return found

    @retried
    def queue(self, requests: Sequence[AssetRequest], recipe_id: str,
              previous: dict[str, dict], job_id: str | None = None) -> dict[str, int]:
        """Mark assets queued for a new attempt; return each one's attempt number."""
        now = utcnow()
        attempts = {r.asset_id: (previous.get(r.asset_id, {}).get("attempt") or 0) + 1
                    for r in requests}
        rows = [{"id": r.asset_id, "owner": r.owner, "source_uri": r.source_uri,
                 "source_fingerprint": r.fingerprint, "recipe_id": recipe_id,
                 "status": "queued", "reason": None, "message": None, "retryable": False,
                 "attempt": attempts[r.asset_id], "job_id": job_id, "updated_at": now}
                for r in requests]
        with self.engine.begin() as conn:
            self._upsert(conn, Asset.__table__, rows, ["id"],
                         ["source_fingerprint", "recipe_id", "status", "reason", "message",
                          "retryable", "attempt", "job_id", "updated_at"])
        return attempts

    def claim(self, requests: Sequence[AssetRequest], recipe_id: str, holder: str,
              lease_s: float, wanted: Callable[[dict | None, AssetRequest], bool],
              job_id: str | None = None) -> Claim:
        """Queue a new attempt at each wanted asset that no other live run holds, as ``holder``.

        ``wanted`` sees each asset's row (None when new) and decides whether it needs
        work. The claim is a compare-and-set: an asset is taken only if its row is
        still as read (same attempt and status) and its claim is free, ``holder``'s
        own, or lapsed; an asset someone changed in between is read and decided
        again. So two runs never both take an asset, on PostgreSQL or SQLite.
        """
        pending = {r.asset_id: r for r in requests}
        attempts: dict[str, int] = {}
        held: dict[str, str | None] = {}
        unwanted: list[str] = []
        for _ in range(CLAIM_ROUNDS):
            if not pending:
                break
            rows = self.assets(pending)
            now = utcnow()
            free = []
            for asset_id, request in list(pending.items()):
                row = rows.get(asset_id)
                if not wanted(row, request):
                    unwanted.append(asset_id)
                elif row is not None and claim_is_live(row, holder, now):
                    held[asset_id] = row["claim_holder"]
                else:
                    free.append((request, row))
                    continue
                del pending[asset_id]
            won = self._claim(free, recipe_id, holder, now + timedelta(seconds=lease_s), job_id)
            attempts.update(won)
            for asset_id in won:
                del pending[asset_id]
        held.update(dict.fromkeys(pending))
        return Claim(attempts, held, unwanted)

    @retried
    def _claim(self, free: Sequence[tuple[AssetRequest, dict | None]], recipe_id: str,
               holder: str, expires: datetime, job_id: str | None) -> dict[str, int]:
        """One transaction of conditional writes; the assets it took, from RETURNING
        (an ON CONFLICT DO NOTHING insert's rowcount is not to be trusted)."""
        table = Asset.__table__
        now = utcnow()
        claimed = {"status": "queued", "reason": None, "message": None, "retryable": False,
                   "recipe_id": recipe_id, "job_id": job_id, "claim_holder": holder,
                   "claim_expires_at": expires, "updated_at": now}
        new = sorted((r for r, row in free if row is None), key=lambda r: r.asset_id)
        old = {r.asset_id: (r, row) for r, row in free if row is not None}
        won: dict[str, int] = {}
        with self.engine.begin() as conn:
            if new:
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                statement = (dialect.insert(table).on_conflict_do_nothing(index_elements=["id"])
                             .returning(table.c.id))
                rows = [{"id": r.asset_id, "owner": r.owner, "source_uri": r.source_uri,
                         "source_fingerprint": r.fingerprint, "attempt": 1, **claimed}
                        for r in new]
                won.update(dict.fromkeys(conn.execute(statement, rows).scalars(), 1))
            if old:
                def by_id(value) -> object:  # one statement, a value per row: CASE id WHEN ...
                    return case({a: value(r, row) for a, (r, row) in old.items()},
                                value=table.c.id)

                statement = (
                    update(table)
                    .where(table.c.id.in_(sorted(old)),
                           table.c.attempt == by_id(lambda r, row: row["attempt"]),
                           table.c.status == by_id(lambda r, row: row["status"]),
                           or_(table.c.claim_holder.is_(None), table.c.claim_holder == holder,
                               table.c.claim_expires_at < now))
                    .values(attempt=table.c.attempt + 1,
                            source_fingerprint=by_id(lambda r, row: r.fingerprint), **claimed)
                    .returning(table.c.id, table.c.attempt))
                won.update(dict(conn.execute(statement).all()))
        return won

    @retried
    def renew_claims(self, holder: str, lease_s: float) -> int:
        """Push back the lease of every claim ``holder`` has; how many there were."""
        with self.engine.begin() as conn:
            return conn.execute(update(Asset.__table__).where(Asset.claim_holder == holder)
                                .values(claim_expires_at=utcnow() + timedelta(seconds=lease_s))
                                ).rowcount

    @retried
    def release_claims(self, holder: str, job_id: str | None = None) -> None:
        """Let go of ``holder``'s claims on assets it did not finish (only those ``job_id``
        queued, if given), e.g. when its run stops or its job fails."""
        table = Asset.__table__
        statement = update(table).where(table.c.claim_holder == holder)
        if job_id is not None:
            statement = statement.where(table.c.job_id == job_id)
        with self.engine.begin() as conn:
            conn.execute(statement.values(claim_holder=None, claim_expires_at=None))

    @retried
    def mark_processing_many(self, attempts: dict[str, int]) -> None:
        """One executemany for a bulk partition that starts on these assets."""
        with self.engine.begin() as conn:
            self._update_assets(conn, [{"id": a, "attempt": n, "status": "processing"}
                                       for a, n in attempts.items()])

    # -- jobs ---------------------------------------------------------------------------------

    @retried
    def start_job(self, job_id: str, kind: str, recipe_id: str, manifest: str) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, Job.__table__, [{
                "id": job_id, "kind": kind, "recipe_id": recipe_id, "manifest": manifest,
                "status": "running", "submitted": 0, "skipped": 0, "updated_at": utcnow()}],
                ["id"], ["status", "updated_at"])

    @retried
    def update_job(self, job_id: str, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(Job.__table__).where(Job.id == job_id)
                         .values(updated_at=utcnow(), **values))

    @retried
    def job_status(self, job_id: str) -> dict | None:
        """The job's row and its assets counted by status, straight from the catalog."""
        with self.engine.connect() as conn:
            job = conn.execute(select(Job.__table__).where(Job.id == job_id)).first()
            if job is None:
                return None
            counts = conn.execute(select(Asset.status, func.count()).where(Asset.job_id == job_id)
                                  .group_by(Asset.status)).all()
        return {**dict(job._mapping), "assets": {status: n for status, n in counts}}

    @retried
    def results(self, asset_ids: Sequence[str]) -> list[dict]:
        """Each asset's public summary, with the renditions of its current version."""
        found = self.assets(asset_ids)
        summaries = []
        for asset_id in asset_ids:
            asset = found[asset_id]
            ready = asset["status"] == "ready" and asset["sha256"]
            renditions = self.renditions(asset["sha256"], asset["recipe_id"]) if ready else []
            summaries.append(asset_summary(asset, renditions))
        return summaries

    # -- what the stages write ----------------------------------------------------------------

    @retried
    def record_stage(self, record: StageRecord) -> None:
        with self.engine.begin() as conn:
            self._stages(conn, [record])

    def _stages(self, conn: Connection, records: Sequence[StageRecord]) -> None:
        rows = [{**r.__dict__, "duration_ms": (r.finished_at - r.started_at).total_seconds() * 1000}
                for r in records]
        if rows:
            self._upsert(conn, StageRun.__table__, rows, ["asset_id", "stage", "attempt"],
                         [c for c in rows[0] if c not in ("asset_id", "stage", "attempt")])

    @retried
    def mark_processing(self, asset_id: str, attempt: int) -> None:
        with self.engine.begin() as conn:
            self._update_assets(conn, [{"id": asset_id, "attempt": attempt, "status": "processing"}])

    @retried
    def put_blob(self, sha256: str, size: int, media_type: str, store: str,
                 metadata: dict | None = None) -> None:
        with self.engine.begin() as conn:
            self._originals(conn, [{"sha256": sha256, "size": size, "media_type": media_type,
                                    "store": store, "media_metadata": metadata}])

    @retried
    def pin_blobs(self, digests: Sequence[str]) -> None:
        """Before storing these bytes: no GC run may now delete them (``catalog.gc``)."""
        with self.engine.begin() as conn:
            pin(conn, digests)

    def _originals(self, conn: Connection, rows: Sequence[dict]) -> None:
        """Originals' blobs, typed columns filled; metadata read again replaces the row's."""
        pin(conn, [r["sha256"] for r in rows])
        read = {r["sha256"]: with_columns(r) for r in rows if r["media_metadata"] is not None}
        blobs, bare = Blob.__table__, [r for r in rows if r["media_metadata"] is None]
        self._upsert(conn, blobs, list(read.values()), ["sha256"], ["media_metadata", *FILLED])
        self._upsert(conn, blobs, bare, ["sha256"])

    @retried
    def write_batch(self, blobs: Sequence[dict], stages: Sequence[StageRecord],
                    ready: Sequence[tuple], stops: Sequence[tuple],
                    hashes: Sequence[dict] = ()) -> None:
        """Many assets' writes in one transaction: the bulk path's way to the catalog.

        ``ready`` holds ``record_ready`` argument tuples, ``stops`` ``record_stop`` ones,
        ``hashes`` ``perceptual_hashes`` rows (``catalog.near_duplicates.hash_row``).
        Set-based: a handful of statements per table whatever the batch size, not a
        round trip per asset.
        """
        with self.engine.begin() as conn:
            self._originals(conn, blobs)
            self._stages(conn, stages)
            self._upsert(conn, PerceptualHash.__table__, list(hashes), ["sha256"])
            self._ready(conn, ready)
            self._stop(conn, stops)

    @retried
    def renditions(self, source_sha256: str, recipe_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Rendition.__table__)
                                .where(Rendition.source_sha256 == source_sha256,
                                       Rendition.recipe_id == recipe_id)
                                .order_by(Rendition.preset))
            return [dict(row._mapping) for row in rows]

    @retried
    def renditions_by_preset(self, source_sha256: str, preset_ids: Sequence[str]) -> dict[str, dict]:
        """Renditions of this source already made with these preset ids, under any recipe."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Rendition.__table__).where(
                Rendition.source_sha256 == source_sha256, Rendition.preset_id.in_(list(preset_ids))))
            return {row.preset_id: dict(row._mapping) for row in rows}

    @retried
    def record_ready(self, asset_id: str, attempt: int, source_sha256: str, recipe_id: str,
                     renditions: Sequence[RenditionRecord], store: str) -> None:
        """In one transaction: output blobs, renditions, the asset's version, and ``ready``."""
        with self.engine.begin() as conn:
            self._ready(conn, [(asset_id, attempt, source_sha256, recipe_id, renditions, store)])

    def _ready(self, conn: Connection, ready: Sequence[tuple]) -> None:
        """``ready`` holds (asset_id, attempt, source_sha256, recipe_id, renditions, store)."""
        if not ready:
            return
        blobs, renditions = {}, []
        for _, _, source_sha256, recipe_id, records, store in ready:
            for r in records:
                blobs.setdefault(r.output_sha256, {"sha256": r.output_sha256, "size": r.bytes,
                                                   "media_type": r.media_type, "store": store})
                renditions.append({
                    "source_sha256": source_sha256, "recipe_id": recipe_id, "preset": r.preset,
                    "output_sha256": r.output_sha256, "format": r.format,
                    "media_type": r.media_type, "width": r.width, "height": r.height,
                    "bytes": r.bytes, "quality": r.quality, "preset_id": r.preset_id,
                    "metric_name": r.metric_name, "metric_value": r.metric_value,
                    "encoder": r.encoder, "tool_versions": r.tool_versions})
        pin(conn, [*blobs, *(source for _, _, source, _, _, _ in ready)])
        self._upsert(conn, Blob.__table__, list(blobs.values()), ["sha256"])
        self._upsert(conn, Rendition.__table__, renditions, ["source_sha256", "recipe_id", "preset"])
        versions = self._versions(conn, [(a, blob, recipe) for a, _, blob, recipe, _, _ in ready])
        self._update_assets(conn, [
            {"id": a, "attempt": attempt, "status": "ready", "sha256": blob,
             "current_version": versions[a, blob, recipe], **_RELEASED}
            for a, attempt, blob, recipe, _, _ in ready])

    @retried
    def record_stop(self, asset_id: str, attempt: int, status: str, reason: str, message: str,
                    retryable: bool, sha256: str | None = None) -> None:
        with self.engine.begin() as conn:
            self._stop(conn, [(asset_id, attempt, status, reason, message, retryable, sha256)])

    def _stop(self, conn: Connection, stops: Sequence[tuple]) -> None:
        """``stops`` holds ``record_stop`` argument tuples (``sha256`` may be left out)."""
        self._update_assets(conn, [
            {"id": a, "attempt": attempt, "status": status, "reason": reason, "message": message,
             "retryable": retryable, "sha256": sha256[0] if sha256 else None, **_RELEASED}
            for a, attempt, status, reason, message, retryable, *sha256 in stops])

    def _versions(self, conn: Connection, keys: Sequence[tuple[str, str, str]]) -> dict[tuple, int]:
        """The version of each (asset, original digest, recipe), making the missing ones.

        A new pair gets its asset's highest version plus one; a pair seen before keeps
        its number, so a retried or repeated write makes no new version.
        """
        table = AssetVersion.__table__
        asset_ids = sorted({a for a, _, _ in keys})

        def existing() -> list:
            rows = []
            for start in range(0, len(asset_ids), 1000):
                rows += conn.execute(select(table.c.asset_id, table.c.blob_sha256,
                                            table.c.recipe_id, table.c.version)
                                     .where(table.c.asset_id.in_(asset_ids[start:start + 1000]))).all()
            return rows

        rows = existing()
        known = {(a, blob, recipe): version for a, blob, recipe, version in rows}
        latest: dict[str, int] = {}
        for a, _, _, version in rows:
            latest[a] = max(latest.get(a, 0), version)
        new = []
        for key in dict.fromkeys(keys):
            if key not in known:
                latest[key[0]] = known[key] = latest.get(key[0], 0) + 1
                new.append({"asset_id": key[0], "version": known[key],
                            "blob_sha256": key[1], "recipe_id": key[2]})
        if new:
            self._upsert(conn, table, new, ["asset_id", "blob_sha256", "recipe_id"])
            # A concurrent writer may have made the same pair first: read back the truth.
            known = {(a, blob, recipe): version for a, blob, recipe, version in existing()}
        return known

    def _update_assets(self, conn: Connection, rows: Sequence[dict]) -> None:
        """Status updates for many assets, one executemany per shape of update.

        Guarded by attempt: a late task of an older attempt never overwrites a newer one.
        And an asset that has ended is never marked ``processing`` again: Dask may run a
        finished asset's first stage again when a worker holding its results dies.
        """
        table = Asset.__table__
        now = utcnow()
        shapes: dict[tuple, list[dict]] = {}
        for row in rows:
            shapes.setdefault((tuple(sorted(row)), row.get("status") == "processing"), []).append(row)
        for (columns, starting), group in shapes.items():
            values = {c: bindparam(f"v_{c}") for c in columns if c not in ("id", "attempt")}
            statement = (update(table)
                         .where(table.c.id == bindparam("v_id"),
                                table.c.attempt == bindparam("v_attempt"))
                         .values(updated_at=now, **values))
            if starting:
                # Plain comparisons: an IN list would be an "expanding" parameter, which
                # executemany refuses.
                statement = statement.where(or_(table.c.status == "queued",
                                                table.c.status == "processing"))
            conn.execute(statement, [{f"v_{c}": v for c, v in row.items()} for row in group])


def asset_summary(asset: dict, renditions: list[dict]) -> dict:
    """The public shape of one asset's result (what ``--json`` prints)."""
    return {"id": asset["id"], "source": asset["source_uri"], "owner": asset["owner"],
            "status": asset["status"], "reason": asset["reason"], "message": asset["message"],
            "retryable": asset["retryable"], "sha256": asset["sha256"],
            "version": asset["current_version"],
            "renditions": [{"preset": r["preset"], "format": r["format"],
                            "media_type": r["media_type"], "width": r["width"],
                            "height": r["height"], "bytes": r["bytes"], "quality": r["quality"],
                            "metric": ({r["metric_name"]: r["metric_value"]}
                                       if r["metric_name"] else None),
                            "playlist": (r["encoder"] or {}).get("playlist"),
                            "sha256": r["output_sha256"]} for r in renditions]}
