"""The video and audio branch of the per-asset stages: transcode, poster, package.

In the graph these run as the resize, convert and compress stages of a video
or audio asset. Media files are large, so they never travel through Dask: each
stage reads the stored original through the store (in place where the store is
a local folder, else served range by range to the sandboxed decoders), works in
a private scratch folder, and stores what it makes content-addressed before
handing on records.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from catalog.records import RenditionRecord
from cluster import placement, runtime
from pipelines.optimize.compress import compress
from pipelines.optimize.hls import hls_rendition, package_hls
from pipelines.outputs import planned_outputs
from pipelines.transform import chunks
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize_hashed
from pipelines.outcome import Failed, Rejected, StageStop
from pipelines.outputs import has_poster
from pipelines.transform.encode_loop import VideoOutput
from pipelines.transform.ladder import ladder
from pipelines.transform.video import (isolated, poster_and_fingerprint_isolated, preview_clip,
                                       transcode_isolated)
from pipelines.upload.hashing import sha256_hex
from pipelines.upload.served_source import Source

import av


def _media_tools() -> dict[str, str]:
    return {"libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "pyav": av.__version__}


def _original(job, carry, opened: ExitStack):
    """The stored original for the sandboxed decoders, while ``opened`` is: its path where
    the originals store is a local folder, else served to them range by range, so that a
    chunk span or a poster frame reads only its part of a remote file (``Store.readable``)."""
    return opened.enter_context(runtime.stores(job.settings)["originals"].readable(carry.sha256))


def _store_output(job, carry, name: str, output: VideoOutput) -> RenditionRecord:
    with open(output.path, "rb") as handle:  # hashed and stored streamed: renditions can be big
        digest = sha256_hex(handle)
    size = Path(output.path).stat().st_size
    runtime.stores(job.settings)["renditions"].put_file(digest, output.path)
    ids = planned_outputs(job.recipe, carry.validated)
    encoder = {**output.settings, "encoder": output.encoder, "video_codec": output.video_codec,
               "audio_codec": output.audio_codec, "duration_s": output.duration_s}
    return RenditionRecord(name, digest, output.container, output.width, output.height,
                           size, None, output.media_type, ids[name], _media_tools(),
                           encoder=encoder)


def transcode(job, carry):
    """The ladder (or the audio rendition), chunked across workers when the source is long.

    The poster frame is taken at the same time, in a second sandboxed child: an
    encode leaves part of the machine idle, and the poster stage then only resizes
    and encodes the frame.
    """
    info = carry.validated.media
    done = {r["preset"] for r in carry.reused}
    records = []
    decoders = placement.video_decoders_here(job.settings.gpu)  # NVDEC, where this worker may
    # Exits run last to first: the poster child is done before the original stops being served.
    with tempfile.TemporaryDirectory(prefix="mediafarm-") as scratch, ExitStack() as opened, \
            ThreadPoolExecutor(1, thread_name_prefix="mediafarm-poster") as beside:
        folder = Path(scratch)
        source = None
        poster_frame = None
        # A video's frame is taken here; an audio file's cover is cheap and left to the poster stage.
        if carry.validated.kind == "video" and _poster_presets(job, carry):
            source = _original(job, carry, opened)
            poster_frame = beside.submit(poster_and_fingerprint_isolated, source, info,
                                         job.settings.limits)
        for preset in job.recipe.video:
            rungs = ([(f"{preset.name}-{h}p", h) for h in ladder(preset, info)]
                     if carry.validated.kind == "video"
                     else [(f"{preset.name}-audio", None)] if preset.audio_codec else [])
            for name, height in rungs:
                if name in done:
                    continue
                source = source or _original(job, carry, opened)
                if height and chunks.should_split(info.duration_s or 0,
                                                  job.settings.split_after_s):
                    output = _chunked(job, carry, source, folder, preset, height)
                else:
                    output = transcode_isolated(source, str(folder), preset, height, info, decoders)
                records.append(_store_output(job, carry, name, output))
            if preset.preview_seconds and carry.validated.kind == "video":
                name = f"{preset.name}-preview"
                if name not in done:
                    source = source or _original(job, carry, opened)
                    output = preview_clip(source, str(folder), preset, info,
                                          preset.preview_seconds, decoders)
                    records.append(_store_output(job, carry, name, output))
        frame, fingerprint = _frame_or_none(poster_frame) or (None, ())
    return replace(carry, published=carry.published + tuple(records), poster_frame=frame,
                   fingerprint=fingerprint,
                   details={r.preset: {"bytes": r.bytes, "width": r.width, "height": r.height,
                                       "encoder": r.encoder["encoder"]} for r in records})


def _frame_or_none(future: Future | None) -> tuple[bytes, tuple[int, ...]] | None:
    """The poster frame and fingerprint taken beside the transcode; None when that did not
    work out.

    A frame that could not be taken is the poster stage's to report: it tries
    again itself and stops the asset with the reason, as it always has.
    """
    if future is None:
        return None
    try:
        return future.result()
    except StageStop:
        return None


def _poster_presets(job, carry) -> tuple:
    """The recipe's image presets this video (or audio with a cover) still needs a poster for."""
    if not has_poster(carry.validated):
        return ()
    made = {r["preset"] for r in carry.reused}
    return tuple(p for p in job.recipe.presets if f"poster-{p.name}" not in made)


def _chunked(job, carry, source: Source, folder: Path, preset, height: int) -> VideoOutput:
    """Encode keyframe-aligned spans as separate Dask tasks, then join them losslessly."""
    from distributed import worker_client

    info = carry.validated.media
    # Demuxing and decoding the upload happen in sandboxed children, as in the whole encode.
    keyframes = isolated(chunks.keyframe_times, source, media_s=info.duration_s or 0.0)
    spans = chunks.plan_chunks(keyframes, info.duration_s, job.settings.chunk_s)
    with worker_client() as client:
        resources = placement.chunk_resources(client, preset.codec)
        futures = [client.submit(encode_span, job, carry.sha256, start, end, preset, height, info,
                                 pure=False, priority=1, resources=resources)
                   for start, end in spans]
        digests = client.gather(futures)
    buffer = runtime.stores(job.settings)["buffer"]
    paths = []
    for index, digest in enumerate(digests):
        paths.append(buffer.download(digest, str(folder / f"chunk-{index:04}.mp4")))
    try:
        return isolated(chunks.join_chunks, paths, source, str(folder / f"joined-{height}.mp4"),
                        preset, info, media_s=info.duration_s or 0.0)
    except Failed as exc:
        if exc.reason != "chunk_mismatch":
            raise
        # Open GOPs or repeated timestamps defeat a lossless join; encode in one piece.
        return transcode_isolated(source, str(folder), preset, height, info)


def encode_span(job, source_sha256: str, start: float, end: float, preset, height: int, info) -> str:
    """One chunk of a long video, on whichever worker Dask picks; stored in the buffer store.

    It reads only its own span of the original (and the index), where the store is remote too.
    """
    stores = runtime.stores(job.settings)
    with tempfile.TemporaryDirectory(prefix="mediafarm-chunk-") as scratch, \
            stores["originals"].readable(source_sha256) as source:
        out = Path(scratch) / "chunk.mp4"
        isolated(chunks.encode_chunk, source, str(out), start, end, preset, height, info,
                 media_s=min(end, info.duration_s or end) - start)
        with open(out, "rb") as handle:
            digest = sha256_hex(handle)
        stores["buffer"].put_file(digest, str(out))
    return digest


def poster(job, carry):
    """A frame away from black, or an audio file's cover, through the recipe's image presets.

    A cover refused as an image would be (a bomb, a broken picture) costs only
    the poster: the stage is skipped with the reason, the audio is ready.
    """
    if not has_poster(carry.validated):
        return replace(carry, details={"skipped": "no video stream and no cover picture"})
    todo = _poster_presets(job, carry)
    if not todo:
        return replace(carry, details={"skipped": "every preset reused"})
    frame, fingerprint = carry.poster_frame, carry.fingerprint
    if frame is None:  # not taken beside the transcode (every rung reused, a cover, or it failed there)
        with runtime.stores(job.settings)["originals"].readable(carry.sha256) as source:
            # Decoding strangers' media happens in a throwaway child, as in the upload probe.
            try:
                frame, fingerprint = poster_and_fingerprint_isolated(
                    source, carry.validated.media, job.settings.limits)
            except Rejected as exc:
                if carry.validated.kind == "video":
                    raise
                return replace(carry, details={
                    "skipped": f"the cover cannot be the poster: {exc.message}",
                    "reason": exc.reason})
    # The poster's pHash comes from the intermediate its renditions are cut from.
    rasters, phash = resize_hashed(frame, todo, limits=job.settings.limits)
    encoded = tuple(replace(compress(to_srgb(r), p), preset=f"poster-{p.name}")
                    for r, p in zip(rasters, todo))
    return replace(carry, encoded=carry.encoded + encoded, poster_frame=None, phash=phash,
                   fingerprint=fingerprint,
                   details={e.preset: len(e.data) for e in encoded})


def package(job, carry):
    """HLS and DASH for the presets that ask for it: the stored ladder remuxed, never re-encoded."""
    wanted = [p for p in job.recipe.video if p.hls and carry.validated.kind == "video"
              and f"{p.name}-hls" not in {r["preset"] for r in carry.reused}]
    if not wanted:
        return replace(carry, details={"skipped": "no HLS asked for, or reused"})
    store = runtime.stores(job.settings)["renditions"]
    rungs = {r["preset"]: r for r in carry.reused}
    rungs.update({r.preset: {"output_sha256": r.output_sha256} for r in carry.published})
    ids = planned_outputs(job.recipe, carry.validated)
    records = []
    with tempfile.TemporaryDirectory(prefix="mediafarm-") as scratch:
        for preset in wanted:
            folder = Path(scratch) / preset.name
            folder.mkdir()
            inputs = []
            for height in ladder(preset, carry.validated.media):
                path = store.download(rungs[f"{preset.name}-{height}p"]["output_sha256"],
                                      str(folder / f"in-{height}p.mp4"))
                inputs.append(hls_rendition(path))
            package_ = package_hls(inputs, str(folder / "hls"))
            name = f"{preset.name}-hls"
            prefix = f"hls/{carry.sha256}/{ids[name]}"
            for relative in (package_.master, package_.mpd, *package_.playlists,
                             *package_.segments):
                store.put_at(f"{prefix}/{relative}", (folder / "hls" / relative).read_bytes())
            master = (folder / "hls" / package_.master).read_bytes()
            digest = sha256_hex(master)
            store.put(digest, master)  # also content-addressed, like every rendition blob
            records.append(RenditionRecord(
                name, digest, "hls", None, None, len(master), None,
                "application/vnd.apple.mpegurl", ids[name], _media_tools(),
                encoder={"playlist": f"{prefix}/{package_.master}",
                         "mpd": f"{prefix}/{package_.mpd}",
                         "segments": len(package_.segments)}))
    return replace(carry, published=carry.published + tuple(records),
                   details={r.preset: r.encoder for r in records})
