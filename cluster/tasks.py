"""The per-asset stage tasks that run on Dask workers: IO around the pure stages.

Each task takes the asset's ``Job`` and what the stage before it handed on
(a ``Carry``), runs its stage, writes a ``stage_runs`` row, and hands on a new
Carry. A stage that stops the asset puts a ``Stop`` in the Carry; the later
tasks pass it through and ``record`` writes the terminal status. Tasks never
raise for a bad file, so one asset cannot take a worker or its neighbours down.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace


from catalog.repository import utcnow
from catalog.records import RenditionRecord, StageRecord
from cluster import metrics, placement, recorder, runtime, video_tasks
from cluster.config import Settings
from cluster.source_pass import read_pass
from cluster.storage.stores import Staged
from pipelines.optimize.compress import Encoded, compress
from pipelines.outputs import planned_outputs
from pipelines.outcome import Failed, Rejected, StageStop, Stop, unexpected
from pipelines.raster import Raster
from pipelines.recipe import Preset, Recipe
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize_hashed
from pipelines.upload.hashing import sha256_hex
from pipelines.upload.isobmff import MAX_FTYP_BYTES
from pipelines.upload.metadata import without_gps
from pipelines.upload.validate import Validated, kind_of, sniff, validate, validate_media_file
from pipelines.vips import tool_versions


@dataclass(frozen=True)
class Job:
    asset_id: str
    attempt: int
    source_uri: str
    recipe: Recipe
    settings: Settings


@dataclass(frozen=True)
class Carry:
    data: bytes | None = None  # a small image's bytes (see cluster.source_pass); else None
    staged: Staged | None = None  # scan to hash: the source's staging object in the originals store
    head: bytes = b""  # scan to validate: the source's first bytes, which name its format
    validated: Validated | None = None
    sha256: str | None = None
    reused: tuple[dict, ...] = ()
    rasters: tuple[Raster, ...] = ()
    encoded: tuple[Encoded, ...] = ()
    published: tuple[RenditionRecord, ...] = ()  # media renditions stored by their stage
    poster_frame: bytes | None = None  # a video's poster frame (PNG), taken beside the transcode
    phash: int | None = None  # the picture's (or poster's) 64-bit pHash, from resize's intermediate
    fingerprint: tuple[int, ...] = ()  # a video's keyframes' pHashes, taken with its poster frame
    stop: Stop | None = None
    details: dict = field(default_factory=dict)


def _run(stage: str, job: Job, carry: Carry, body: Callable[[], Carry]) -> Carry:
    """Run one stage's body, record how it went, and turn any error into a Stop."""
    if carry.stop is not None:
        return carry
    started, clock = utcnow(), time.perf_counter()
    status, stop, error = "ok", None, None
    try:
        result = body()
        if result.details.get("skipped"):
            status = "skipped"
    except StageStop as exc:
        stop, error = Stop.from_error(stage, exc), exc
    except Exception as exc:  # noqa: BLE001 - a bug or an outage must not cost the worker
        # Retryable or not by its kind: see pipelines.outcome.DETERMINISTIC_ERRORS.
        stop, error = Stop.from_error(stage, unexpected(exc)), exc
    if stop is not None:
        result = replace(carry, data=None, rasters=(), encoded=(), poster_frame=None, stop=stop,
                         details=getattr(error, "details", {}))
        status = stop.status.value
    metrics.stage_finished(stage, status, time.perf_counter() - clock,
                           stop.reason if stop else None)
    recorder.current(runtime.catalog(job.settings)).stage(StageRecord(
        asset_id=job.asset_id, stage=stage, attempt=job.attempt, status=status,
        started_at=started, finished_at=utcnow(), worker=runtime.worker_name(),
        reason=stop.reason if stop else None,
        error_class=type(error).__name__ if error else None,
        error_message=_error_text(error) if error else None,
        details=result.details or None))
    return replace(result, details={})


def _error_text(error: Exception) -> str:
    if isinstance(error, StageStop):
        return error.message
    return "".join(traceback.format_exception_only(error)).strip()


def scan_task(job: Job) -> Carry:
    """Scan, hash and stage the source in one streamed read (``cluster.source_pass``)."""
    def body() -> Carry:
        recorder.current(runtime.catalog(job.settings)).processing(job.asset_id, job.attempt)
        passed = read_pass(job.source_uri, job.settings, runtime.stores(job.settings),
                           runtime.scanner(job.settings.clamd_url))
        return Carry(data=passed.data, staged=passed.staged, head=passed.head,
                     details=passed.details)
    return _run("scan", job, Carry(), body)


def validate_task(job: Job, carry: Carry) -> Carry:
    def body() -> Carry:
        try:
            validated = _validate(job, carry)
        except BaseException:
            _discard(job, carry)  # refused or failed: its staged bytes are not kept
            raise
        if not job.settings.keep_gps:  # the farm's policy: the place goes no further
            validated = replace(validated, metadata=without_gps(validated.metadata))
        return replace(carry, validated=validated, details={
            "format": validated.format, "width": validated.width, "height": validated.height})
    return _run("validate", job, carry, body)


def _validate(job: Job, carry: Carry) -> Validated:
    """Headers only: a small image from its bytes; a staged image read whole (it is under the
    image limit); video and audio probed in the sandbox from the store, never from memory."""
    limits = job.settings.limits
    if carry.staged is None:
        return validate(carry.data, limits)
    store = runtime.stores(job.settings)["originals"]
    kind = kind_of(sniff(carry.head[:MAX_FTYP_BYTES]))
    if kind == "image":
        return validate(store.read_staged(carry.staged), limits)
    if kind != "media":
        return validate(carry.head, limits)  # refused, and named, from its first bytes
    # In place where the store is local, else served to the sandboxed probe range by range.
    with store.readable_staged(carry.staged) as source:
        return validate_media_file(source, carry.head, carry.staged.size, limits)


def _discard(job: Job, carry: Carry) -> None:
    if carry.staged is None:
        return
    try:
        runtime.stores(job.settings)["originals"].discard(carry.staged)
    except Failed:  # the asset's outcome stands; a sweep of staging/ finds what is left
        pass


def hash_task(job: Job, carry: Carry) -> Carry:
    def body() -> Carry:
        catalog = runtime.catalog(job.settings)
        originals = runtime.stores(job.settings)["originals"]
        staged = carry.staged
        digest = staged.sha256 if staged is not None else sha256_hex(carry.data)
        # Pinned before it is stored: a GC sweeping these bytes now either finds the pin
        # and keeps them, or finishes first and the put below writes them anew (catalog.gc).
        catalog.pin_blobs([digest])
        if staged is not None:
            # Hashed while it was read and staged: published by digest, never read again here.
            size = staged.size
            created = originals.promote(staged)
        else:
            size = len(carry.data)
            created = originals.put(digest, carry.data)
        recorder.current(catalog).blob(digest, size, carry.validated.media_type,
                                       "originals", carry.validated.metadata)
        # Renditions these bytes already have with identical presets, under any recipe, are
        # reused: the same bytes or an unchanged preset is never decoded or encoded again.
        ids = {pid: name for name, pid in planned_outputs(job.recipe, carry.validated).items()}
        existing = catalog.renditions_by_preset(digest, list(ids)) if ids else {}
        reused = tuple({**row, "preset": ids[preset_id]} for preset_id, row in existing.items())
        # Media stages read the stored original themselves, and an index renders nothing:
        # no bytes go further than this stage then.
        data = carry.data if ids and carry.validated.kind == "image" else None
        details = {"sha256": digest, "stored": created, "bytes": size,
                   "reused": sorted(r["preset"] for r in reused)}
        phash = None
        if not ids and carry.validated.kind == "image":  # an index: the picture's pHash here
            phash, details["phash"] = _index_phash(job, carry, originals, digest)
        return replace(carry, data=data, staged=None, head=b"", sha256=digest, reused=reused,
                       phash=phash, details=details)
    return _run("hash", job, carry, body)


# The box an index decodes a picture into for its perceptual hash: the default recipe's
# smallest, so shrink-on-load does most of the work.
PHASH_BOX = Preset("phash", 150, 150)


def _index_phash(job: Job, carry: Carry, originals, digest: str) -> tuple[int | None, str]:
    """An indexed picture's pHash (as the resize stage takes it, from a small decode), and
    how it went: a picture whose body cannot be decoded is still indexed, without one."""
    data = carry.data if carry.data is not None else originals.get(digest)
    try:
        _, phash = resize_hashed(data, (PHASH_BOX,), limits=job.settings.limits,
                                 decoder=carry.validated.decoder)
    except Rejected as exc:
        return None, f"none: {exc.message}"
    return phash, "taken"


def _todo(job: Job, carry: Carry) -> tuple[Preset, ...]:
    done = {r["preset"] for r in carry.reused}
    return tuple(p for p in job.recipe.presets if p.name not in done)


def resize_task(job: Job, carry: Carry) -> Carry:
    def body() -> Carry:
        if carry.validated.kind != "image":
            return video_tasks.transcode(job, carry)
        todo = _todo(job, carry)
        if not todo:
            return replace(carry, data=None, details={"skipped": "every preset reused"})
        # A large image was staged, not carried: read from the store, under the image limit.
        data = carry.data if carry.data is not None else \
            runtime.stores(job.settings)["originals"].get(carry.sha256)
        rasters, phash = resize_hashed(data, todo,
                                       device=placement.image_device_here(job.settings.gpu),
                                       limits=job.settings.limits, decoder=carry.validated.decoder)
        return replace(carry, data=None, rasters=tuple(rasters), phash=phash,
                       details={r.preset: [r.width, r.height] for r in rasters})
    return _run("resize", job, carry, body)


def convert_task(job: Job, carry: Carry) -> Carry:
    def body() -> Carry:
        if carry.validated.kind != "image":
            return video_tasks.poster(job, carry)
        if not carry.rasters:
            return replace(carry, details={"skipped": "every preset reused"})
        return replace(carry, rasters=tuple(to_srgb(r) for r in carry.rasters))
    return _run("convert", job, carry, body)


def compress_task(job: Job, carry: Carry) -> Carry:
    def body() -> Carry:
        if carry.validated.kind != "image":
            return video_tasks.package(job, carry)
        if not carry.rasters:
            return replace(carry, details={"skipped": "every preset reused"})
        presets = {p.name: p for p in job.recipe.presets}
        encoded = tuple(compress(r, presets[r.preset]) for r in carry.rasters)
        # A quality search's verdict (target met, or a note saying why not) goes on record.
        return replace(carry, rasters=(), encoded=encoded, details={
            e.preset: {"format": e.format, "quality": e.quality, "bytes": len(e.data),
                       "metric": e.metric,
                       **{k: e.settings[k] for k in ("target_met", "note") if k in e.settings}}
            for e in encoded})
    return _run("compress", job, carry, body)


def record_task(job: Job, carry: Carry) -> dict:
    """Write the asset's terminal state; returns a small summary for the client."""
    writes = recorder.current(runtime.catalog(job.settings))
    stop = carry.stop
    if stop is None:
        def body() -> Carry:
            renditions = _publish(job, carry)
            if carry.phash is not None:  # before ready: the same transaction in a partition
                writes.perceptual_hash(carry.sha256, carry.phash, carry.fingerprint)
            writes.ready(job.asset_id, job.attempt, carry.sha256, job.recipe.id, renditions,
                         "renditions")
            return replace(carry, encoded=(), details={"renditions": len(renditions)})
        stop = _run("record", job, carry, body).stop
    if stop is not None:
        writes.stop(job.asset_id, job.attempt, stop.status.value, stop.reason, stop.message,
                    stop.retryable, carry.sha256)
    metrics.outcome(stop.status.value if stop else "ready", stop.reason if stop else None)
    return {"asset_id": job.asset_id, "status": stop.status.value if stop else "ready",
            "reason": stop.reason if stop else None}


def _publish(job: Job, carry: Carry) -> list[RenditionRecord]:
    """Store new encodings and list every rendition of this recipe, reused ones included."""
    records = [RenditionRecord(r["preset"], r["output_sha256"], r["format"], r["width"],
                               r["height"], r["bytes"], r["quality"], r["media_type"],
                               r["preset_id"], r["tool_versions"], r["metric_name"],
                               r["metric_value"], r["encoder"]) for r in carry.reused]
    records += carry.published
    store = runtime.stores(job.settings)["renditions"]
    ids = planned_outputs(job.recipe, carry.validated)
    for encoded in carry.encoded:
        digest = sha256_hex(encoded.data)
        store.put(digest, encoded.data)
        metric_name, metric_value = encoded.metric or (None, None)
        records.append(RenditionRecord(
            encoded.preset, digest, encoded.format, encoded.width, encoded.height,
            len(encoded.data), encoded.quality, encoded.media_type, ids[encoded.preset],
            tool_versions(), metric_name, metric_value, encoded.settings))
    return records


TASKS: dict[str, Callable] = {
    "scan": scan_task, "validate": validate_task, "hash": hash_task, "resize": resize_task,
    "convert": convert_task, "compress": compress_task, "record": record_task,
}
