"""Video transcoding: the farm against Debian's ffmpeg CLI, and chunked encodes (issue 5).

Three measurements in one run, on clips this script makes with PyAV (no ffmpeg
CLI involved in making them):

1. **Renditions of a 1080p clip.** A 1920x1080, 25 fps clip of ``--seconds``
   (default 20) with a stereo AAC track (see ``make_clip``) is turned into two
   renditions, each with the same settings everywhere:

   - ``h264``: ``VideoPreset("h264", heights=(720,), crf=23, speed="veryfast",
     audio_codec="libopus", container="mp4")``, i.e. 1280x720 x264 veryfast
     CRF 23, GOP 50, yuv420p, Opus 128 kb/s, MP4 with faststart;
   - ``av1``: ``VideoPreset("av1", codec="libsvtav1", heights=(720,), crf=35,
     speed="10", audio_codec="libopus", container="mp4")``, SVT-AV1 preset 10
     CRF 35, otherwise the same.

   Timed, per rendition and for the pair:

   - farm: ``Farm(settings, client=...).ingest([clip], recipe, force=True).wait()``
     on a LocalCluster of one single-threaded worker process per core (the
     Farm's default layout), clamd started with ``start_clamd`` on
     ``tests/signatures``, a SQLite catalog and local stores. The whole asset:
     scan, validate (sandboxed probe), hash, transcode (``transcode_isolated``
     per rung, one after the other in one task), poster (one 150x150 ``thumb``
     image preset), package (nothing to do: no HLS) and record, plus the
     client's catalog work. Cluster start-up, catalog migrations and a clamd
     restart before each run (clamd caches the MD5 of clean files) are not
     timed. Each run gets a fresh data folder: ``force=True`` alone would reuse
     the renditions already made (same bytes, same preset ids);
   - transcode: ``pipelines.transform.video.transcode`` in this process, and
     ``transcode_isolated`` (the same in a throwaway child, as the farm calls it);
   - ffmpeg: Debian's ``/usr/bin/ffmpeg`` with the same settings::

       ffmpeg -y -i clip.mp4 -vf scale=-2:720 -c:v libx264 -preset veryfast -crf 23 -g 50
              -pix_fmt yuv420p -c:a libopus -b:a 128k -movflags +faststart out.mp4
       ffmpeg ... -c:v libsvtav1 -preset 10 -crf 35 -g 50 ...

     for the pair both "one after the other" (the sum of the two single runs of
     the round, which is what running them in turn costs) and "parallel" (two
     processes at once, like the farm's two workers).

   PyAV's wheel bundles its own FFmpeg, x264 and SVT-AV1 builds, not Debian's:
   the versions are reported, and the encoders differ (SVT-AV1 most of all).
   Output sizes and an SSIM against the source (scaled to 720p) are reported
   for the last round, as context for the speeds; nothing here asserts on them.

2. **Chunked encodes.** A 1280x720 clip of ``--long-seconds`` (default 60) made
   the same way goes through the farm with one ``h264`` 720p rung (same preset)
   twice per round: with ``split_after_s`` = half the duration and ``chunk_s``
   = a quarter (four keyframe-aligned chunks encoded as separate Dask tasks,
   then joined), and with splitting off (``split_after_s`` = 1e9).

3. **Peak memory.** The high-water resident set (``VmHWM`` in
   ``/proc/PID/status``, polled every 0.2 s by a thread of this script) of each
   Dask worker, of the sandboxed children the workers start (probe, transcode,
   poster), of the ``transcode_isolated`` children this script starts, and of
   each ffmpeg process. Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` (and
   so ``RUSAGE_CHILDREN``) starts from its parent's high-water mark at fork,
   even across exec, so it would report the worker's size, not the child's.

Run as root, the script first gives up CAP_SYS_NICE (see ``drop_realtime``):
SVT-AV1 would otherwise run its threads, and with PyAV the encoding thread,
at real-time priority, starving the rest of a shared machine.

Rounds interleave the contenders (farm, ffmpeg, transcode, transcode_isolated
per rendition, then farm and parallel ffmpeg for the pair; whole then chunked
for part 2) after an untimed warm-up on a small clip. Figures are medians over
``--rounds``; ratios are medians of the per-round ratios. Progress goes to
stderr. Nothing here asserts on timings.

Run from the repository root (needs clamd and Debian's ffmpeg)::

    .venv/bin/python benchmarks/bench_video.py      # 3 rounds; about 9 minutes on a busy 2-core VM
    .venv/bin/python benchmarks/bench_video.py --seconds 10 --long-seconds 30 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

# SVT-AV1 prints its banner and configuration to stderr unless told otherwise (1: errors only).
# Set before any worker, sandbox child or ffmpeg starts: they all inherit it.
os.environ.setdefault("SVT_LOG", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.recipe import Preset, Recipe, VideoPreset  # noqa: E402
from pipelines.upload.sandbox import drop_realtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = ROOT / "tests" / "signatures"
FPS = 25
SEED = 5  # issue 5
MIB = 1024 * 1024

H264 = VideoPreset("h264", heights=(720,), crf=23, speed="veryfast", audio_codec="libopus",
                   container="mp4")
AV1 = VideoPreset("av1", codec="libsvtav1", heights=(720,), crf=35, speed="10",
                  audio_codec="libopus", container="mp4")
PRESETS = {"h264": H264, "av1": AV1}
THUMB = Preset("thumb", 150, 150, fit="cover")  # the poster's only image preset
HEIGHT = 720


def recipe(name: str, *video: VideoPreset) -> Recipe:
    return Recipe(f"bench-{name}", (THUMB,), video=video)


# -- the clips ----------------------------------------------------------------------------------

def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A luma plane with detail at several scales: waves, 40-pixel blocks, fine static grain."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    plane = (110 + 60 * np.sin(xx * 0.011 + 0.7 * np.sin(yy * 0.013))
             + 35 * np.sin(yy * 0.031 - xx * 0.007))
    blocks = rng.integers(-25, 26, size=(height // 40 + 1, width // 40 + 1))
    plane += blocks.repeat(40, 0).repeat(40, 1)[:height, :width]
    plane += rng.normal(0, 3.0, size=(height, width))
    return np.clip(plane, 4, 251).astype(np.uint8)


def make_clip(path: Path, seconds: float, width: int, height: int, seed: int = SEED) -> dict:
    """Write an H.264 (x264 CRF 18, veryfast, GOP 2 s) + AAC stereo MP4 with PyAV; return its facts.

    Picture: two textured bands panning in opposite directions at 6 px per frame
    (back and forth), a disc moving across them and changing brightness, chroma
    waves drifting over time, and fresh +-2 luma grain every frame (five planes
    in turn). Sound: a gliding sine (220 +- 110 Hz) with a little noise, 48 kHz.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * FPS))
    pan = 6
    span = min(frames * pan, 4 * width)
    top = _texture(rng, height // 2, width + span)
    bottom = _texture(rng, height - height // 2, width + span)
    chroma_u = (128 + 30 * np.sin(np.arange(width // 2) * 0.01))[None, :].repeat(height // 2, 0)
    chroma_v = (128 + 30 * np.cos(np.arange(height // 2) * 0.013))[:, None].repeat(width // 2, 1)
    grain = [rng.integers(0, 5, size=(height, width), dtype=np.uint8) for _ in range(5)]
    radius = height // 8
    dy, dx = np.mgrid[-radius:radius, -radius:radius]
    disc = dx * dx + dy * dy < radius * radius
    planes = np.empty((height * 3 // 2, width), np.uint8)  # yuv420p: Y, then U and V
    quarter = height // 4
    with av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = 2 * FPS
        audio = out.add_stream("aac", rate=48000)
        audio.codec_context.layout = "stereo"
        audio.codec_context.bit_rate = 128_000
        sample = 0
        for index in range(frames):
            t = index / FPS
            offset = (index * pan) % (2 * span)
            offset = offset if offset <= span else 2 * span - offset
            planes[:height // 2] = top[:, offset:offset + width]
            planes[height // 2:height] = bottom[:, span - offset:span - offset + width]
            planes[:height] += grain[index % 5]
            planes[:height] -= 2
            cx = int(width / 2 + (width / 2 - radius - 1) * np.sin(t * 0.8))
            cy = int(height / 2 + (height / 2 - radius - 1) * np.cos(t * 1.1))
            planes[cy - radius:cy + radius, cx - radius:cx + radius][disc] = 235 - int(40 * (1 + np.sin(t)))
            planes[height:height + quarter] = (chroma_u + 20 * np.sin(t)).reshape(-1, width)
            planes[height + quarter:] = (chroma_v - 20 * np.sin(t * 0.7)).reshape(-1, width)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            out.mux(video.encode(frame))
            end = round((index + 1) * 48000 / FPS)
            while sample < end:
                times = (sample + np.arange(1024)) / 48000
                tone = (0.2 * np.sin(2 * np.pi * (220 + 110 * np.sin(times * 0.5)) * times)
                        + 0.02 * rng.standard_normal(1024))
                piece = av.AudioFrame.from_ndarray(np.stack([tone, 0.8 * tone]).astype(np.float32),
                                                   format="fltp", layout="stereo")
                piece.sample_rate, piece.pts, piece.time_base = 48000, sample, Fraction(1, 48000)
                out.mux(audio.encode(piece))
                sample += 1024
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    size = path.stat().st_size
    return {"path": path.name, "width": width, "height": height, "fps": FPS, "seconds": seconds,
            "frames": frames, "bytes": size, "mbit_s": round(size * 8 / seconds / 1e6, 2),
            "make_s": round(time.perf_counter() - start, 1)}


# -- ffmpeg ---------------------------------------------------------------------------------------

FFMPEG_VIDEO = {"h264": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"],
                "av1": ["-c:v", "libsvtav1", "-preset", "10", "-crf", "35"]}


def ffmpeg_command(source: Path, out: Path, rendition: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
            "-vf", f"scale=-2:{HEIGHT}", *FFMPEG_VIDEO[rendition], "-g", str(2 * FPS),
            "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "128k",
            "-movflags", "+faststart", str(out)]


def run_processes(commands: list[list[str]], log_dir: Path) -> float:
    """Start every command at once, wait for all; the wall seconds."""
    start = time.perf_counter()
    children = []
    for index, command in enumerate(commands):
        stderr = open(log_dir / f"ffmpeg-{index}.log", "w+b")
        children.append((subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=stderr), stderr, command))
    failures = []
    for child, stderr, command in children:
        child.wait()
        if child.returncode != 0:
            stderr.seek(0)
            failures.append(f"{' '.join(command)}\n  exit {child.returncode}: "
                            f"{stderr.read().decode(errors='replace')[-2000:]}")
        stderr.close()
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError("ffmpeg failed:\n" + "\n".join(failures))
    return seconds


# -- peak memory ----------------------------------------------------------------------------------

class PeakMonitor(threading.Thread):
    """Polls VmHWM (the resident high-water mark of the process's own memory) of our descendants."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="peak-monitor")
        self.interval, self.root = interval, os.getpid()
        self.seen: dict[int, dict] = {}  # pid: {"name", "ppid", "kib"}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        table = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = dict(line.split(":", 1) for line in
                              Path(entry.path, "status").read_text().splitlines() if ":" in line)
            except OSError:  # gone, or not ours to read
                continue
            table[int(entry.name)] = (fields.get("Name", "").strip(), int(fields.get("PPid", "0")),
                                      int(fields.get("VmHWM", "0 kB").split()[0]))
        for pid, (name, ppid, kib) in table.items():
            ancestor, hops = ppid, 0
            while ancestor not in (0, 1, self.root) and hops < 16:
                ancestor, hops = table.get(ancestor, ("", 0, 0))[1], hops + 1
            if ancestor != self.root:
                continue
            known = self.seen.setdefault(pid, {"name": name, "ppid": ppid, "kib": 0})
            known["kib"] = max(known["kib"], kib)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.sample()

    def peaks_mib(self, workers: set[int]) -> dict:
        """The largest high-water mark per kind of process, in MiB; workers one by one."""
        def mib(kib: int) -> float:
            return round(kib / 1024, 1)

        kinds: dict[str, int] = {}

        def note(kind: str, kib: int) -> None:
            kinds[kind] = max(kinds.get(kind, 0), kib)

        for pid, seen in self.seen.items():
            if pid in workers:
                continue
            if seen["ppid"] in workers and seen["name"].startswith("python"):
                note("worker_sandbox_child", seen["kib"])
            elif seen["name"] == "ffmpeg":
                note("ffmpeg", seen["kib"])
            elif seen["ppid"] == self.root and seen["name"].startswith("python"):
                note("bench_isolated_child", seen["kib"])
        return {"workers": [mib(self.seen.get(pid, {"kib": 0})["kib"]) for pid in sorted(workers)],
                **{kind: mib(kib) for kind, kib in sorted(kinds.items())}}


# -- the farm -------------------------------------------------------------------------------------

class FarmHung(RuntimeError):
    """The farm's graph did not finish within --farm-timeout."""


@dataclasses.dataclass
class FarmOutcome:
    seconds: float
    stage_ms: dict[str, float]
    renditions: dict[str, int]  # preset: bytes
    chunks: dict[str, int]  # video rendition: chunks joined (absent when encoded in one piece)


def _import_worker_modules() -> None:
    import cluster.tasks  # noqa: F401  (stage code, PyAV, pyvips, SQLAlchemy, fsspec)


class FarmRunner:
    """The farm on its own LocalCluster (one single-threaded worker per core); a fresh data folder per run."""

    def __init__(self, workdir: Path, clamd, processes: int, timeout: float) -> None:
        from cluster.farm import Farm

        self.workdir, self.clamd, self.timeout, self.runs = workdir, clamd, timeout, 0
        self.owner = Farm(self._settings("cluster"), n_workers=processes)
        self.client = self.owner.client
        self.client.wait_for_workers(processes)
        self.client.run(_import_worker_modules)
        self.worker_pids = set(self.client.run(os.getpid).values())

    def _settings(self, name: str, **overrides):
        from cluster.config import load_settings

        # Only these variables: the caller's MEDIAFARM_* and DASK_SCHEDULER_ADDRESS stay out.
        settings = load_settings(environ={"MEDIAFARM_DATA_DIR": str(self.workdir / name),
                                          "MEDIAFARM_CLAMD_URL": self.clamd.url})
        return dataclasses.replace(settings, **overrides)

    def run(self, source: Path, recipe_: Recipe, **overrides) -> FarmOutcome:
        import distributed

        from cluster.farm import Farm

        self.runs += 1
        name = f"run-{self.runs}"
        # clamd remembers the MD5 of clean files and would skip the scan: restart it (untimed).
        self.clamd.start_again()
        farm = Farm(self._settings(name, **overrides), client=self.client)  # migrations: untimed
        try:
            start = time.perf_counter()
            batch = farm.ingest([str(source)], recipe_, force=True)
            try:
                # A guard against a hung graph, not a measurement: Batch.wait has no timeout.
                distributed.wait(list(batch.futures.values()), timeout=self.timeout)
            except TimeoutError:
                raise FarmHung(f"the farm did not finish {source.name} within {self.timeout:g} s "
                               f"(--farm-timeout)") from None
            [result] = batch.wait()
            seconds = time.perf_counter() - start
        finally:
            farm.close()  # the client and cluster belong to self.owner
        if result["status"] != "ready":
            raise RuntimeError(f"the farm did not make {source.name}'s renditions: {result['status']} "
                               f"{result.get('reason')}: {result.get('message')}")
        stage_ms, chunks = self._from_catalog(farm.settings.catalog_url)
        renditions = {r["preset"]: r["bytes"] for r in result["renditions"]}
        shutil.rmtree(self.workdir / name, ignore_errors=True)
        return FarmOutcome(seconds, stage_ms, renditions, chunks)

    @staticmethod
    def _from_catalog(catalog_url: str) -> tuple[dict[str, float], dict[str, int]]:
        """Worker time per stage (stage_runs) and how many chunks each rendition was joined from."""
        with sqlite3.connect(catalog_url.removeprefix("sqlite:///")) as db:
            stages = dict(db.execute("SELECT stage, SUM(duration_ms) FROM stage_runs GROUP BY stage"))
            chunks = {}
            for preset, encoder in db.execute("SELECT preset, encoder FROM renditions"):
                value = json.loads(encoder) if isinstance(encoder, str) else (encoder or {})
                if isinstance(value, dict) and value.get("chunks"):
                    chunks[preset] = value["chunks"]
        return stages, chunks

    def close(self) -> None:
        self.owner.close()


# -- the run --------------------------------------------------------------------------------------

def _median(values: list[float], digits: int = 2) -> float:
    return round(statistics.median(values), digits)


def _summary(seconds: list[float]) -> dict:
    return {"median_s": _median(seconds), "rounds_s": [round(s, 2) for s in seconds]}


def _ratio(numerators: list[float], denominators: list[float]) -> dict:
    per_round = [n / d for n, d in zip(numerators, denominators)]
    return {"median": _median(per_round, 3), "rounds": [round(r, 3) for r in per_round]}


def _x264_core(path: Path) -> str | None:
    """x264 writes its version into an SEI message of every stream it makes."""
    found = re.search(rb"x264 - core (\d+)( r\d+)?", path.read_bytes()[:4 * MIB])
    return found.group(0).decode() if found else None


def _ssim(rendition: Path, source: Path) -> float | None:
    """SSIM (all planes) of a rendition against the source scaled to its size, by Debian's ffmpeg."""
    graph = f"[1:v]scale=-2:{HEIGHT}:flags=bicubic[ref];[0:v][ref]ssim"
    done = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(rendition), "-i", str(source),
                           "-lavfi", graph, "-f", "null", "-"], capture_output=True, text=True)
    found = re.search(r"SSIM .* All:([0-9.]+)", done.stderr)
    return float(found.group(1)) if found else None


def measure(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict:
    from cluster.cli.local_clamd import start_clamd
    from pipelines.transform.video import transcode, transcode_isolated
    from pipelines.upload.media_probe import probe_media
    from pipelines.upload.scan import ClamdScanner

    processes = os.cpu_count() or 1
    clips = workdir / "clips"
    clips.mkdir()
    log(f"making the clips with PyAV: {args.seconds:g} s at 1920x1080, "
        f"{args.long_seconds:g} s at 1280x720")
    warm_clip = make_clip(clips / "warm.mp4", 2, 640, 360, seed=SEED + 1)
    clip = make_clip(clips / "clip-1080p.mp4", args.seconds, 1920, 1080)
    long_clip = make_clip(clips / "long-720p.mp4", args.long_seconds, 1280, 720, seed=SEED + 2)
    source, long_source = clips / clip["path"], clips / long_clip["path"]
    for made in (clip, long_clip):
        log(f"  {made['path']}: {made['bytes'] / MIB:.1f} MiB, {made['mbit_s']} Mb/s, "
            f"made in {made['make_s']} s")
    info = probe_media(source.read_bytes())

    out = workdir / "out"
    out.mkdir()
    farm_recipes = {"h264": recipe("h264", H264), "av1": recipe("av1", AV1),
                    "pair": recipe("pair", H264, AV1)}
    biggest = max(p.stat().st_size for p in clips.iterdir()) // MIB + 16
    clamd = start_clamd(SIGNATURES, workdir / "clamd", stream_max_length=f"{biggest}M")
    runner = None
    monitor = PeakMonitor()
    monitor.start()
    try:
        engine = ClamdScanner(clamd.url).version()[0]
        log(f"starting the farm's LocalCluster ({processes} single-threaded workers) and clamd (untimed)")
        runner = FarmRunner(workdir / "farm", clamd, processes, args.farm_timeout)

        # Warm-up, untimed: imports and encoder libraries in the workers, their sandbox children,
        # this process and ffmpeg; and the chunked path once.
        log("warm-up on a 2 s 640x360 clip (untimed)")
        warm = clips / warm_clip["path"]
        runner.run(warm, farm_recipes["pair"])
        runner.run(warm, recipe("chunk", H264), split_after_s=1.0, chunk_s=0.5)
        warm_info = probe_media(warm.read_bytes())
        for preset in (H264, AV1):
            transcode(str(warm), str(out), preset, HEIGHT, warm_info)
            transcode_isolated(str(warm), str(out), preset, HEIGHT, warm_info)
        run_processes([ffmpeg_command(warm, out / f"warm-{r}.mp4", r) for r in PRESETS], out)

        names = ("farm", "ffmpeg", "transcode", "isolated")
        single = {r: {n: [] for n in names} for r in PRESETS}
        pair = {"farm": [], "ffmpeg_parallel": []}
        farm_stages: dict[str, list[dict]] = {"h264": [], "av1": [], "pair": []}
        farm_bytes: dict[str, int] = {}

        for index in range(args.rounds):
            log(f"round {index + 1}/{args.rounds}: {clip['path']}")
            for rendition, preset in PRESETS.items():
                outcome = runner.run(source, farm_recipes[rendition])
                single[rendition]["farm"].append(outcome.seconds)
                farm_stages[rendition].append(outcome.stage_ms)
                farm_bytes.update(outcome.renditions)

                target = out / f"ffmpeg-{rendition}.mp4"
                seconds = run_processes([ffmpeg_command(source, target, rendition)], out)
                single[rendition]["ffmpeg"].append(seconds)

                folder = out / "transcode"
                folder.mkdir(exist_ok=True)
                start = time.perf_counter()
                made = transcode(str(source), str(folder), preset, HEIGHT, info)
                single[rendition]["transcode"].append(time.perf_counter() - start)
                os.replace(made.path, out / f"transcode-{rendition}.mp4")  # kept for the SSIM

                start = time.perf_counter()
                made = transcode_isolated(str(source), str(folder), preset, HEIGHT, info)
                single[rendition]["isolated"].append(time.perf_counter() - start)
                os.remove(made.path)
                log("  " + "  ".join(f"{n} {single[rendition][n][-1]:6.2f} s" for n in names)
                    + f"   <- {rendition}")

            outcome = runner.run(source, farm_recipes["pair"])
            pair["farm"].append(outcome.seconds)
            farm_stages["pair"].append(outcome.stage_ms)
            seconds = run_processes(
                [ffmpeg_command(source, out / f"parallel-{r}.mp4", r) for r in PRESETS], out)
            pair["ffmpeg_parallel"].append(seconds)
            in_turn = single["h264"]["ffmpeg"][-1] + single["av1"]["ffmpeg"][-1]
            log(f"  farm {pair['farm'][-1]:6.2f} s  ffmpeg in parallel {seconds:6.2f} s  "
                f"ffmpeg one after the other {in_turn:6.2f} s   <- pair")
        monitor.sample()
        peaks_after_part1 = monitor.peaks_mib(runner.worker_pids)

        # Part 2: chunked against whole, on the long 720p clip.
        duration = probe_media(long_source.read_bytes()).duration_s or args.long_seconds
        split = {"split_after_s": duration / 2, "chunk_s": duration / 4}
        chunk_recipe = recipe("chunk", H264)
        chunked = {"whole": [], "chunked": []}
        chunk_stages: dict[str, list[dict]] = {"whole": [], "chunked": []}
        chunk_counts: list[int] = []
        for index in range(args.rounds):
            log(f"round {index + 1}/{args.rounds}: {long_clip['path']}")
            for way, overrides in (("whole", {"split_after_s": 1e9}), ("chunked", split)):
                outcome = runner.run(long_source, chunk_recipe, **overrides)
                chunked[way].append(outcome.seconds)
                chunk_stages[way].append(outcome.stage_ms)
                if way == "chunked":
                    chunk_counts.append(outcome.chunks.get(f"h264-{HEIGHT}p", 0))
                elif outcome.chunks:
                    raise RuntimeError(f"splitting was off, yet the farm joined chunks: {outcome.chunks}")
            log(f"  whole {chunked['whole'][-1]:6.2f} s  chunked {chunked['chunked'][-1]:6.2f} s "
                f"({chunk_counts[-1]} chunks)")
        monitor.sample()
        peaks_end = monitor.peaks_mib(runner.worker_pids)
    finally:
        monitor.stop()
        if runner is not None:
            runner.close()
        clamd.stop()

    log("SSIM of the last round's outputs against the source (Debian's ffmpeg; untimed)")
    quality = {}
    for rendition in PRESETS:
        for way, path in (("pyav", out / f"transcode-{rendition}.mp4"),
                          ("ffmpeg", out / f"ffmpeg-{rendition}.mp4")):
            quality[f"{rendition}/{way}"] = {
                "bytes": path.stat().st_size,
                "kbit_s": round(path.stat().st_size * 8 / args.seconds / 1000),
                "ssim": _ssim(path, source)}
    x264 = {"pyav": _x264_core(out / "transcode-h264.mp4"),
            "debian": _x264_core(out / "ffmpeg-h264.mp4")}

    def stage_medians(runs: list[dict]) -> dict:
        return {stage: round(statistics.median(r.get(stage, 0.0) for r in runs))
                for stage in runs[0]}

    transcodes = {}
    for rendition in PRESETS:
        times = single[rendition]
        transcodes[rendition] = {
            **{name: _summary(times[name]) for name in names},
            "ratios": {"farm/ffmpeg": _ratio(times["farm"], times["ffmpeg"]),
                       "transcode/ffmpeg": _ratio(times["transcode"], times["ffmpeg"]),
                       "isolated/ffmpeg": _ratio(times["isolated"], times["ffmpeg"]),
                       "farm/isolated": _ratio(times["farm"], times["isolated"])},
            "farm_stage_ms": stage_medians(farm_stages[rendition]),
        }
    sequential = [a + b for a, b in zip(single["h264"]["ffmpeg"], single["av1"]["ffmpeg"])]
    isolated_pair = [a + b for a, b in zip(single["h264"]["isolated"], single["av1"]["isolated"])]
    transcodes["pair"] = {
        "farm": _summary(pair["farm"]),
        "ffmpeg_one_after_the_other": _summary(sequential),
        "ffmpeg_parallel": _summary(pair["ffmpeg_parallel"]),
        "isolated_one_after_the_other": _summary(isolated_pair),
        "ratios": {"farm/ffmpeg_one_after_the_other": _ratio(pair["farm"], sequential),
                   "farm/ffmpeg_parallel": _ratio(pair["farm"], pair["ffmpeg_parallel"]),
                   "farm/isolated_one_after_the_other": _ratio(pair["farm"], isolated_pair)},
        "farm_stage_ms": stage_medians(farm_stages["pair"]),
    }
    return {
        "clamd": engine,
        "clips": {"main": clip, "long": long_clip},
        "transcode": transcodes,
        "chunked": {
            "settings": {k: round(v, 2) for k, v in split.items()},
            "chunks": chunk_counts,
            "whole": _summary(chunked["whole"]),
            "chunked": _summary(chunked["chunked"]),
            "speedup": _ratio(chunked["whole"], chunked["chunked"]),
            "resize_stage_ms": {way: round(statistics.median(r.get("resize", 0.0) for r in runs))
                                for way, runs in chunk_stages.items()},
        },
        "outputs_last_round": quality,
        "farm_renditions_bytes_last_round": farm_bytes,
        "x264": x264,
        "peak_rss_mib": {"after_part1": peaks_after_part1, "at_end": peaks_end},
    }


def versions() -> dict:
    libs = sorted(p.name for p in (Path(av.__file__).parent.parent / "av.libs").glob("*.so*"))

    def bundled(prefix: str) -> str | None:
        found = next((n for n in libs if n.lower().startswith(prefix.lower())), None)
        return found.split(".so.", 1)[1] if found and ".so." in found else found

    debian = {}
    try:
        listing = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "ffmpeg",
                                  "libsvtav1enc*", "libx264-*", "libopus0"],
                                 capture_output=True, text=True).stdout
        debian = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    except OSError:
        pass
    ffmpeg_line = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
    return {
        "pyav": av.__version__, "pyav_ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "pyav_svtav1": bundled("libSvtAv1Enc"), "pyav_libx264_soname": bundled("libx264"),
        "pyav_libopus": bundled("libopus"),
        "debian_ffmpeg": ffmpeg_line, "debian_packages": debian,
        "python": platform.python_version(), "platform": platform.platform(),
        "cores": os.cpu_count(),
    }


def print_table(report: dict) -> None:
    clip, long_clip = report["clips"]["main"], report["clips"]["long"]
    v, x264 = report["versions"], report["x264"]
    debian_svt = next((version for package, version in v["debian_packages"].items()
                       if package.startswith("libsvtav1enc")), "?")
    print(f"{report['date']}; {v['cores']} cores; {report['rounds']} rounds; medians in seconds")
    print(f"PyAV {v['pyav']}: FFmpeg {v['pyav_ffmpeg']}, SVT-AV1 {v['pyav_svtav1']}, {x264['pyav']}")
    print(f"{v['debian_ffmpeg'].split(' Copyright')[0]}: SVT-AV1 {debian_svt}, {x264['debian']}")
    print(f"clip: {clip['width']}x{clip['height']} {clip['fps']} fps {clip['seconds']:g} s, "
          f"{clip['bytes'] / MIB:.1f} MiB ({clip['mbit_s']} Mb/s), to 720p")
    print()
    t = report["transcode"]
    print(f"{'rendition':<10}{'farm':>8}{'ffmpeg':>8}{'transc.':>9}{'isolat.':>9}"
          f"{'farm/ff':>9}{'isol/ff':>9}{'transc/ff':>10}")
    for rendition in PRESETS:
        row, ratios = t[rendition], t[rendition]["ratios"]
        print(f"{rendition:<10}{row['farm']['median_s']:>8.2f}{row['ffmpeg']['median_s']:>8.2f}"
              f"{row['transcode']['median_s']:>9.2f}{row['isolated']['median_s']:>9.2f}"
              f"{ratios['farm/ffmpeg']['median']:>8.2f}x{ratios['isolated/ffmpeg']['median']:>8.2f}x"
              f"{ratios['transcode/ffmpeg']['median']:>9.2f}x")
    p = t["pair"]
    for label, key in (("pair, ffmpeg one after the other", "ffmpeg_one_after_the_other"),
                       ("pair, ffmpeg in parallel", "ffmpeg_parallel")):
        print(f"{label:<34} farm {p['farm']['median_s']:6.2f}  ffmpeg {p[key]['median_s']:6.2f}  "
              f"farm/ffmpeg {p['ratios'][f'farm/{key}']['median']:.2f}x")
    print(f"farm stages for the pair (ms of worker time): {p['farm_stage_ms']}")
    print()
    c = report["chunked"]
    print(f"chunked: {long_clip['width']}x{long_clip['height']} {long_clip['seconds']:g} s to h264 720p, "
          f"chunks {c['chunks']}: whole {c['whole']['median_s']:.2f}, "
          f"chunked {c['chunked']['median_s']:.2f}, "
          f"speed-up {c['speedup']['median']:.2f}x; resize stage ms {c['resize_stage_ms']}")
    print()
    print("last round's outputs (bytes, SSIM against the source scaled to 720p):")
    for name, row in report["outputs_last_round"].items():
        print(f"  {name:<14}{row['bytes']:>10}  {row['kbit_s']:>6} kb/s  SSIM {row['ssim']}")
    for when, peaks in report["peak_rss_mib"].items():
        print(f"peak RSS MiB ({when.replace('_', ' ')}): workers {peaks['workers']}, "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in peaks.items() if k != "workers"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="1080p clip length (default 20)")
    parser.add_argument("--long-seconds", type=float, default=60.0,
                        help="720p clip length for the chunked encode (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--farm-timeout", type=float, default=600.0,
                        help="give up on a farm run after this long (a hang guard; default 600)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 4 or args.long_seconds < 8:
        parser.error("--rounds >= 1, --seconds >= 4 and --long-seconds >= 8")
    if shutil.which("ffmpeg") is None:
        parser.error("needs Debian's ffmpeg on PATH (apt-get install ffmpeg)")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    realtime = drop_realtime()  # before any thread that starts processes or encoders
    log(f"real-time priority: {realtime}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        report = measure(args, Path(tmp), log)
    report = {"date": datetime.date.today().isoformat(), "rounds": args.rounds,
              "versions": versions(), "realtime": realtime, **report,
              "total_s": round(time.perf_counter() - started)}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
