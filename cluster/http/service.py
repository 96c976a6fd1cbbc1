"""What the HTTP endpoint holds for its lifetime: its limits, one Farm, in-flight work, jobs.

Submissions are fire and forget: the request returns once the catalog says
``queued`` and the graph is on the scheduler. The futures are kept here until
they finish, because Dask forgets (and cancels) work nobody holds; the catalog,
not these futures, says how each asset ends.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from distributed import Future
from sqlalchemy import text

from catalog.records import AssetRequest
from cluster import metrics
from cluster.http import owned
from cluster.http.auth import RateLimiter
from cluster.config import Settings
from cluster.farm import Farm
from cluster.quarantine import record_lost, worker_deaths
from cluster.tasks import Job
from cluster.http.signed_urls import load_secret
from cluster.http.upload_store import check_ingest_prefix
from pipelines.recipe import DEFAULT_RECIPE, Recipe
from pipelines.upload import capabilities, scanner_check
from pipelines.upload.scan import ClamdScanner
from pipelines.vips import tool_versions

log = logging.getLogger(__name__)

MEDIA_CONTENT_TYPES = (
    "video/mp4", "video/quicktime", "video/webm", "video/x-matroska",
    "audio/mpeg", "audio/ogg", "audio/wav", "audio/x-wav", "audio/flac", "audio/mp4",
)


def accepted_content_types(requested: frozenset[str] | None = None) -> frozenset[str]:
    """The content types uploads may have: ``requested`` (all by default) less the image types no
    decoder in this process reads, found by decoding a sample of each (``capabilities``)."""
    images = capabilities.image_media_types()
    if requested is None:
        return images | frozenset(MEDIA_CONTENT_TYPES)
    dropped = {t for t in requested if t.startswith("image/") and t not in images}
    if dropped:
        log.warning("MEDIAFARM_API_CONTENT_TYPES: no decoder here reads %s; not accepted",
                    ", ".join(sorted(dropped)))
    return frozenset(requested) - dropped
FORM_OVERHEAD = 64 * 1024
SUBMIT_BATCH = 200  # assets taken into one catalog round and one graph submission  # room for a multipart body's boundaries and part headers


@dataclass(frozen=True)
class ApiConfig:
    """The endpoint's own settings, from ``MEDIAFARM_API_*`` and friends."""

    max_upload_bytes: int
    content_types: frozenset[str] = field(default_factory=accepted_content_types)
    rate_limit: float = 10.0      # requests a second per token, sustained
    rate_burst: int = 20          # requests at once per token
    purge_originals_on_delete: bool = False
    url_expires_s: int = 3600     # presigned GET and PUT URLs, and this server's signed URLs
    # The key of this server's signed rendition URLs; a code-made config gets a fresh one.
    url_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    source_stores: tuple[str, ...] = ("buffer", "originals")  # what admins' manifests may name
    ingest_prefix: str | None = None  # e.g. s3://bucket/ingest/{owner}/: owners' own sources
    spool_dir: str | None = None  # temporary files of multipart uploads (default: system temp)
    max_json_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0  # a request head must be complete within this
    body_timeout_s: float = 30.0    # a body that sends nothing this long ends with 408
    max_unauthenticated_connections: int = 32  # per client address, no request under way
    client_rate_limit: float = 1.0  # failed authentications a second per client address
    client_rate_burst: int = 20     # failed authentications at once per client address
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For names the client
    public_url: str | None = None   # base of the URLs handed out (default: the bound address)
    # Resumable (tus) and S3 multipart uploads: how long one may stay unfinished (renewed by
    # each tus PATCH), and how often the server's clean-up drops the expired (0: never).
    upload_expires_s: int = 24 * 3600
    upload_cleanup_s: float = 600.0
    # Completion webhooks (cluster.http.webhooks): the hosts callbacks may name (empty: any
    # host whose addresses are all public), attempts before giving up, the first retry's
    # delay (doubling after), each request's timeout, and how often the log is read (0: never).
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_max_attempts: int = 5
    webhook_retry_s: float = 30.0
    webhook_timeout_s: float = 5.0
    webhook_interval_s: float = 2.0


def load_api_config(settings: Settings, environ: Mapping[str, str] | None = None) -> ApiConfig:
    env = os.environ if environ is None else environ

    def text_value(name: str, default: str) -> str:
        return env.get(name) or default

    max_upload = env.get("MEDIAFARM_API_MAX_UPLOAD_BYTES")
    types = env.get("MEDIAFARM_API_CONTENT_TYPES")
    stores = tuple(s.strip() for s in text_value("MEDIAFARM_API_SOURCE_STORES",
                                                  "buffer,originals").split(",") if s.strip())
    unknown = [s for s in stores if s not in settings.stores]
    if unknown:
        raise ValueError(f"MEDIAFARM_API_SOURCE_STORES names unknown stores: {unknown}")
    ingest = env.get("MEDIAFARM_API_INGEST_PREFIX") or None
    if ingest:
        check_ingest_prefix(ingest, {name: store.url for name, store in settings.stores.items()})
    return ApiConfig(
        max_upload_bytes=int(max_upload) if max_upload else settings.limits.max_bytes + FORM_OVERHEAD,
        content_types=accepted_content_types(
            frozenset(t.strip().lower() for t in types.split(",") if t.strip()) if types else None),
        rate_limit=float(text_value("MEDIAFARM_API_RATE_LIMIT", "10")),
        rate_burst=int(text_value("MEDIAFARM_API_RATE_BURST", "20")),
        purge_originals_on_delete=text_value("MEDIAFARM_PURGE_ORIGINALS_ON_DELETE", "false")
        .lower() in ("1", "true", "yes", "on"),
        url_expires_s=int(text_value("MEDIAFARM_API_URL_EXPIRES", "3600")),
        url_secret=load_secret(env.get("MEDIAFARM_API_URL_SECRET"), settings.data_dir),
        source_stores=stores,
        ingest_prefix=ingest,
        spool_dir=env.get("MEDIAFARM_API_SPOOL_DIR") or None,
        header_timeout_s=float(text_value("MEDIAFARM_API_HEADER_TIMEOUT", "10")),
        body_timeout_s=float(text_value("MEDIAFARM_API_BODY_TIMEOUT", "30")),
        max_unauthenticated_connections=int(
            text_value("MEDIAFARM_API_MAX_UNAUTHENTICATED_CONNECTIONS", "32")),
        client_rate_limit=float(text_value("MEDIAFARM_API_CLIENT_RATE_LIMIT", "1")),
        client_rate_burst=int(text_value("MEDIAFARM_API_CLIENT_RATE_BURST", "20")),
        trusted_proxies=tuple(p.strip() for p in text_value("MEDIAFARM_API_TRUSTED_PROXIES", "")
                              .split(",") if p.strip()),
        public_url=public_base_url(env.get("MEDIAFARM_API_PUBLIC_URL")),
        upload_expires_s=int(text_value("MEDIAFARM_API_UPLOAD_EXPIRES", "86400")),
        upload_cleanup_s=float(text_value("MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL", "600")),
        webhook_allowed_hosts=tuple(h.strip().lower() for h in text_value(
            "MEDIAFARM_WEBHOOK_ALLOWED_HOSTS", "").split(",") if h.strip()),
        webhook_max_attempts=max(1, int(text_value("MEDIAFARM_WEBHOOK_MAX_ATTEMPTS", "5"))),
        webhook_retry_s=float(text_value("MEDIAFARM_WEBHOOK_RETRY", "30")),
        webhook_timeout_s=float(text_value("MEDIAFARM_WEBHOOK_TIMEOUT", "5")),
        webhook_interval_s=float(text_value("MEDIAFARM_WEBHOOK_INTERVAL", "2")),
    )


def public_base_url(value: str | None) -> str | None:
    """``MEDIAFARM_API_PUBLIC_URL`` checked: http(s), a host, maybe a path prefix; no slash at the end."""
    if not value:
        return None
    parsed = urlparse(value)
    if (parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query
            or parsed.fragment or "@" in parsed.netloc):
        raise ValueError(f"MEDIAFARM_API_PUBLIC_URL must be like https://media.example.com[/prefix], "
                         f"not {value!r}")
    return value.rstrip("/")


class FarmService:
    """One Farm for the server's lifetime, and the work it has in flight."""

    def __init__(self, farm: Farm, config: ApiConfig, recipe: Recipe | None = None) -> None:
        self.farm, self.config = farm, config
        self.settings = farm.settings
        self.catalog = farm.catalog
        self.engine = farm.catalog.engine
        self.stores = farm.stores
        self.recipe = recipe or DEFAULT_RECIPE
        self.limiter = RateLimiter(config.rate_limit, config.rate_burst)
        self.client_limiter = RateLimiter(config.client_rate_limit, config.client_rate_burst)
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future] = {}
        self._job_errors: dict[str, str] = {}
        self._closing = False
        self._queue: queue.Queue = queue.Queue()
        self._submitter = threading.Thread(target=self._submit_loop, name="mediafarm-submit",
                                           daemon=True)
        self._submitter.start()
        metrics.SERVICES.watch(self)  # its in-flight assets and queue depth, when scraped

    # -- assets -------------------------------------------------------------------------------

    def enqueue(self, request: AssetRequest) -> concurrent.futures.Future:
        """Queue one asset for submission; the future resolves once it is on the scheduler.

        One thread submits for the whole server, taking every request that arrived
        meanwhile as one batch: one catalog round of reads and upserts for many
        concurrent uploads instead of one each.
        """
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((request, done))
        return done

    def submit(self, request: AssetRequest) -> None:
        """Submit one asset on the per-asset graph (interactive priority) and return."""
        self.enqueue(request).result()

    def _submit_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < SUBMIT_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            try:
                self._submit_batch([request for request, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)

    def _submit_batch(self, requests: list[AssetRequest]) -> None:
        unique = list({r.asset_id: r for r in requests}.values())
        previous = self.catalog.assets(r.asset_id for r in unique)
        normal, forced = [], []
        for request in unique:
            before = previous.get(request.asset_id)
            if before and before["deleted_at"] is not None:
                owned.undelete(self.engine, request.asset_id)  # sent again: wanted again
                forced.append(request)
                continue
            with self._lock:
                running = self._in_flight.get(request.asset_id)
            if (running is not None and not running.done() and before
                    and before["source_fingerprint"] == request.fingerprint):
                continue  # the same bytes are already on their way
            normal.append(request)
        for group, force in ((normal, False), (forced, True)):
            if group:
                batch = self.farm.submit(group, self.recipe, force=force)
                for asset_id, future in batch.futures.items():
                    self._hold(batch.jobs[asset_id], future)

    def _hold(self, job: Job, future: Future) -> None:
        asset_id = job.asset_id
        self._track(asset_id, future)

        def settled(done: Future) -> None:
            self._untrack(asset_id, done)
            if self._closing or done.status == "finished":
                return
            # The graph died on the cluster (e.g. KilledWorker): the asset still ends.
            try:
                error = done.exception(timeout=5)
            except Exception as exc:  # noqa: BLE001 - cancelled futures raise here
                error = exc
            deaths = worker_deaths(error)
            if deaths:
                # Its own thread: callbacks share one, and the retry waits its turn to run alone.
                threading.Thread(target=self._retry_alone, args=(job, deaths), daemon=True,
                                 name=f"mediafarm-retry-{asset_id[:8]}").start()
                return
            record_lost(self.catalog, asset_id, job.attempt, error)

        future.add_done_callback(settled)

    def _retry_alone(self, job: Job, deaths: int) -> None:
        held: list[Future] = []

        def hold(future: Future) -> None:
            held.append(future)
            self._track(job.asset_id, future)

        try:
            self.farm.retry_alone(job, deaths, hold)
        except Exception as exc:  # noqa: BLE001 - the asset still ends
            if not self._closing:
                record_lost(self.catalog, job.asset_id, job.attempt, exc)
        finally:
            for future in held:
                self._untrack(job.asset_id, future)

    def _track(self, asset_id: str, future: Future) -> None:
        with self._lock:
            self._in_flight[asset_id] = future

    def _untrack(self, asset_id: str, future: Future) -> None:
        with self._lock:
            if self._in_flight.get(asset_id) is future:
                del self._in_flight[asset_id]

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def queue_depth(self) -> int:
        """Requests waiting for the submit thread (approximate, as ``Queue.qsize`` is)."""
        return self._queue.qsize()

    # -- jobs ---------------------------------------------------------------------------------

    def start_job(self, kind: str, recipe: Recipe, *, where: str = "", manifest: str = "",
                  owner: str = "default") -> str:
        """Start a backfill or re-encode in a background thread; returns its id at once."""
        job_id = str(uuid.uuid4())
        tooled = recipe.with_tools(tool_versions())
        self.catalog.ensure_recipe(tooled.id, tooled.name, tooled.canonical())
        described = manifest if kind == "backfill" else ",".join(
            filter(None, ["catalog:status=ready", f"recipe_id!={tooled.id}", where]))
        self.catalog.start_job(job_id, kind, tooled.id, described)

        def run() -> None:
            try:
                if kind == "reencode":
                    self.farm.reencode(recipe, where=where, job_id=job_id)
                else:
                    self.farm.backfill(manifest, recipe, job_id=job_id, owner=owner)
            except Exception as exc:  # noqa: BLE001 - the job's row must say it ended
                log.exception("job %s failed", job_id)
                self._job_errors[job_id] = f"{type(exc).__name__}: {exc}"
                self.catalog.update_job(job_id, status="failed")

        threading.Thread(target=run, name=f"mediafarm-job-{job_id[:8]}", daemon=True).start()
        return job_id

    def job_error(self, job_id: str) -> str | None:
        return self._job_errors.get(job_id)

    # -- health -------------------------------------------------------------------------------

    def readiness(self) -> dict[str, str]:
        """Each dependency's state: ``ok`` or what went wrong."""
        checks: dict[str, str] = {}
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["catalog"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["catalog"] = _describe(exc)
        try:
            workers = self.farm.client.nthreads(callback_timeout=5)
            checks["scheduler"] = "ok" if workers else "no workers"
        except Exception as exc:  # noqa: BLE001
            checks["scheduler"] = _describe(exc)
        try:
            # Answering is not enough: a clamd that passes what it skipped must not take uploads.
            scanner = ClamdScanner(self.settings.clamd_url, timeout=15)
            checks["clamd"] = scanner_check.problem(scanner) or "ok"
        except Exception as exc:  # noqa: BLE001
            checks["clamd"] = _describe(exc)
        return checks

    def close(self) -> None:
        metrics.SERVICES.forget(self)
        self._queue.put(None)
        self._submitter.join(timeout=30)
        self._closing = True
        self.farm.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
