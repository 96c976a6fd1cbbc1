"""Image renditions: the farm's full path against bare pyvips and Pillow loops (issue 4).

On a corpus of real photographs (``benchmarks/photos.py``: Debian's
``lomiri-wallpapers-16.04``, 13 JPEGs of 4.5 to 15.9 MP) and the default recipe
(``pipelines.recipe.DEFAULT_RECIPE``: thumb 150x150 cover, small 400, medium 800,
large 1600 contain; WebP quality 80), this measures images per second for three
ways of making the same four renditions of every photograph:

- farm:   ``cluster.farm.Farm(settings)`` with its own LocalCluster (one
  single-threaded worker process per core, ``VIPS_CONCURRENCY=1``), a clamd
  started with ``cluster.cli.local_clamd.start_clamd`` on ``tests/signatures``, a
  SQLite catalog and local stores in a temporary folder. Timed: from
  ``farm.ingest(paths)`` to ``wait()`` returning, i.e. the whole graph (scan,
  validate, hash, resize, convert, compress, record) plus the client's catalog
  work on both sides. Cluster and clamd start-up are not timed. Each round uses
  a fresh data folder (catalog and stores) on the same cluster, because the
  same bytes with the same recipe are deduplicated (``force=True`` alone would
  skip resize, convert and compress), and restarts clamd first (untimed),
  because clamd caches the MD5 of clean files and would not scan the same
  bytes again. clamd runs beside the workers on the same cores; with its
  default ``ScanImageFuzzyHash yes`` it decodes every image to hash it.
- pyvips: a bare loop, one process per core (``multiprocessing`` spawn pool,
  ``VIPS_CONCURRENCY=1`` in the children, chunksize 1); per photograph, read
  the file, then per preset ``pyvips.Image.thumbnail_buffer(data, width,
  height=..., size="down", crop="centre" for cover)`` and ``webpsave_buffer(Q=80,
  effort=2, keep="none")``: the encoder settings of ``pipelines/optimize/compress.py``.
- pillow: the same loop in Pillow, one process per core. Per photograph: read,
  ``Image.open``, ``draft`` (the JPEG decoder's own 1/2, 1/4, 1/8 scaling, kept
  at least twice the largest rendition, as libvips' shrink-on-load and
  ``Image.thumbnail``'s ``reducing_gap=2`` do), ``ImageOps.exif_transpose`` (one
  decode), then per preset ``thumbnail`` (contain) or ``ImageOps.fit`` (cover),
  both Lanczos, and ``save(format="WEBP", quality=80, method=2)``. Pillow's
  ``method`` and libvips' ``effort`` are the same libwebp setting
  (``WebPConfig.method``), so method 2 is effort 2.

Pools are started and warmed before timing; before the first round each way
renders the first photographs once, untimed. Rounds run the three interleaved
(farm, pyvips, pillow, farm, ...). Reported: median images/s over the rounds,
the ratios farm/pyvips (target >= 0.8) and farm/pillow as medians of the
per-round ratios, the renditions' total bytes, and the peak resident memory
(``ru_maxrss``) of each Dask worker and each pool child over the whole run,
and the farm's time per stage from its catalog's ``stage_runs``. Every farm
asset must end ``ready``; a farm round that has not finished after
``--farm-timeout`` seconds stops the benchmark with an error (a hang guard, not
a measurement). Nothing here asserts on timings.

Run from the repository root (needs clamd, as for the tests, and the photographs:
``benchmarks/photos.py --install`` as root)::

    .venv/bin/python benchmarks/bench_images.py              # 3 rounds, about a minute on 2 cores
    .venv/bin/python benchmarks/bench_images.py --rounds 7 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Only the standard library and photos.py at module level: the pool children import this
# file (multiprocessing "spawn"), and each should hold only pyvips or only Pillow.
from photos import add_corpus_arguments, corpus_or_none, describe

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = ROOT / "tests" / "signatures"
PILLOW_WEBP_METHOD = 2  # libwebp's WebPConfig.method, which libvips calls effort
VIPS_EFFORT = 2         # as pipelines/optimize/compress.py
WAYS = ("farm", "pyvips", "pillow")

# (name, width, height or None, fit, quality): plain data for the pool children.
PlainPreset = tuple[str, int, int | None, str, int]


# -- in every process: memory -----------------------------------------------------------------

def peak_rss_kib() -> int:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vips_concurrency(_: object = None) -> int:
    """libvips' worker threads per image in this process."""
    import pyvips

    return pyvips.concurrency_get()


# -- pool children ----------------------------------------------------------------------------

def _start_vips_child() -> None:
    os.environ["VIPS_CONCURRENCY"] = "1"  # read when libvips starts, i.e. on import
    import pyvips  # noqa: F401


def _start_pillow_child() -> None:
    from PIL import Image, ImageOps, WebPImagePlugin  # noqa: F401


# A job is (path, presets) or (path, presets, out): with an output folder, each rendition is
# also written there as <stem>.<preset>.webp (benchmarks/bench_peers.py's pools).
Job = tuple[str, tuple[PlainPreset, ...]] | tuple[str, tuple[PlainPreset, ...], str]


def _keep(job: Job, name: str, data: bytes) -> int:
    """Write one rendition when the job names an output folder; its size either way."""
    if len(job) > 2:
        Path(job[2], f"{Path(job[0]).stem}.{name}.webp").write_bytes(data)
    return len(data)


def vips_renditions(job: Job) -> tuple[int, int, int, int]:
    """One photograph's renditions with bare pyvips: (pid, peak RSS KiB, renditions, bytes)."""
    path, presets = job[:2]
    data = Path(path).read_bytes()
    total = sum(_keep(job, preset[0], vips_rendition(data, preset)) for preset in presets)
    return os.getpid(), peak_rss_kib(), len(presets), total


def vips_rendition(data: bytes, preset: PlainPreset) -> bytes:
    """One rendition of an encoded image with bare pyvips (shrink-on-load, then WebP)."""
    import pyvips

    _name, width, height, fit, quality = preset
    options = {"height": height or width, "size": "down"}
    if fit == "cover":
        options["crop"] = "centre"
    image = pyvips.Image.thumbnail_buffer(data, width, **options)
    return image.webpsave_buffer(Q=quality, effort=VIPS_EFFORT, keep="none")


def _scaled_size(width: int, height: int, preset: PlainPreset) -> tuple[int, int]:
    """The size before any crop: inside the box (contain) or covering it (cover); never up."""
    _name, box_w, box_h, fit, _quality = preset
    box_h = box_h or box_w
    pick = max if fit == "cover" else min
    scale = min(1.0, pick(box_w / width, box_h / height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def pillow_renditions(job: Job) -> tuple[int, int, int, int]:
    """One photograph's renditions with Pillow: (pid, peak RSS KiB, renditions, bytes)."""
    from PIL import Image, ImageOps

    path, presets = job[:2]
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as source:
        turned = source.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation swaps sides
        width, height = (source.height, source.width) if turned else source.size
        sizes = [_scaled_size(width, height, p) for p in presets]
        need = (2 * max(w for w, _ in sizes), 2 * max(h for _, h in sizes))
        source.draft(None, (need[1], need[0]) if turned else need)
        upright = ImageOps.exif_transpose(source)  # decodes, at the drafted scale
    total = 0
    for name, box_w, box_h, fit, quality in presets:
        if fit == "cover":
            image = ImageOps.fit(upright, (box_w, box_h), method=Image.Resampling.LANCZOS)
        else:
            image = upright.copy()
            image.thumbnail((box_w, box_h or box_w), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=quality, method=PILLOW_WEBP_METHOD)
        total += _keep(job, name, out.getvalue())
    return os.getpid(), peak_rss_kib(), len(presets), total


# -- the three ways ---------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    seconds: float
    renditions: int
    bytes: int
    stage_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # farm: per stage, summed


class PoolWay:
    """A bare loop: a spawn pool of ``processes`` children, one photograph per task."""

    def __init__(self, processes: int, start: Callable[[], None],
                 render: Callable, presets: tuple[PlainPreset, ...]) -> None:
        import multiprocessing

        self.render, self.presets = render, presets
        self.pool = multiprocessing.get_context("spawn").Pool(processes, initializer=start)
        self.peaks: dict[int, int] = {}
        # Start every child now (the initializer imports the library), not in the first round.
        self.pool.map(time.sleep, [0.2] * processes, chunksize=1)

    def run(self, paths: list[Path]) -> Outcome:
        jobs = [(str(p), self.presets) for p in paths]
        start = time.perf_counter()
        results = list(self.pool.imap_unordered(self.render, jobs, chunksize=1))
        seconds = time.perf_counter() - start
        for pid, peak, _count, _bytes in results:
            self.peaks[pid] = max(peak, self.peaks.get(pid, 0))
        return Outcome(seconds, sum(r[2] for r in results), sum(r[3] for r in results))

    def concurrency(self) -> list[int]:
        return self.pool.map(vips_concurrency, range(len(self.peaks) or 1), chunksize=1)

    def peak_rss_mib(self) -> list[float]:
        return [round(kib / 1024, 1) for _pid, kib in sorted(self.peaks.items())]

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class FarmFailed(RuntimeError):
    """The farm did not make every rendition (an asset not ``ready``, or a hung graph)."""


class FarmHung(FarmFailed):
    """The farm's graph did not finish within --farm-timeout."""


class FarmWay:
    """The farm's full path on its own LocalCluster; a fresh data folder per run."""

    def __init__(self, workdir: Path, clamd, processes: int, timeout: float) -> None:
        from cluster.farm import Farm

        self.workdir, self.clamd, self.timeout, self.runs = workdir, clamd, timeout, 0
        self.owner = Farm(self._settings("warm-up"), n_workers=processes)
        self.client = self.owner.client
        self.client.wait_for_workers(processes)
        self.client.run(_import_worker_modules)

    def _settings(self, name: str):
        from cluster.config import load_settings

        # Only these variables: the caller's MEDIAFARM_* and DASK_SCHEDULER_ADDRESS stay out.
        return load_settings(environ={"MEDIAFARM_DATA_DIR": str(self.workdir / name),
                                      "MEDIAFARM_CLAMD_URL": self.clamd.url})

    def run(self, paths: list[Path]) -> Outcome:
        import distributed

        from cluster.farm import Farm

        self.runs += 1
        # clamd remembers the MD5 of every clean file and does not scan those bytes again; a
        # restart empties that cache, so every run scans for real, as with new uploads.
        self.clamd.start_again()
        farm = Farm(self._settings(f"run-{self.runs}"), client=self.client)  # migrations: untimed
        sources = [str(p) for p in paths]
        start = time.perf_counter()
        batch = farm.ingest(sources)
        try:
            # A guard against a hung graph, not a measurement: Batch.wait has no timeout.
            distributed.wait(list(getattr(batch, "futures", {}).values()), timeout=self.timeout)
        except TimeoutError:
            raise FarmHung(f"the farm did not finish {len(sources)} photographs within "
                           f"{self.timeout:g} s (--farm-timeout); the Dask workers' errors, "
                           f"if any, are above") from None
        results = batch.wait()
        seconds = time.perf_counter() - start
        farm.close()  # the client and cluster belong to self.owner
        bad = [f"{r['source']}: {r['status']} {r.get('reason')}" for r in results
               if r["status"] != "ready"]
        if bad:
            raise FarmFailed("the farm did not make every rendition:\n  " + "\n  ".join(bad))
        renditions = [x for r in results for x in r["renditions"]]
        return Outcome(seconds, len(renditions), sum(x.get("bytes") or 0 for x in renditions),
                       self._stage_ms(farm.settings.catalog_url))

    @staticmethod
    def _stage_ms(catalog_url: str) -> dict[str, float]:
        """Worker time per stage, summed over the run's assets, from the catalog's stage_runs."""
        import sqlite3

        try:
            with sqlite3.connect(catalog_url.removeprefix("sqlite:///")) as db:
                rows = db.execute("SELECT stage, SUM(duration_ms) FROM stage_runs GROUP BY stage")
                return {stage: total for stage, total in rows}
        except sqlite3.Error:
            return {}

    def concurrency(self) -> list[int]:
        return list(self.client.run(vips_concurrency).values())

    def peak_rss_mib(self) -> list[float]:
        peaks = self.client.run(peak_rss_kib)  # {worker address: KiB}
        return [round(kib / 1024, 1) for _address, kib in sorted(peaks.items())]

    def close(self) -> None:
        self.owner.close()


def _import_worker_modules() -> None:
    import cluster.tasks  # noqa: F401  (the stage code, pyvips, SQLAlchemy, fsspec)


# -- the run ----------------------------------------------------------------------------------

def measure(paths: list[Path], rounds: int, processes: int, farm_timeout: float,
            log: Callable[[str], None]) -> dict:
    from cluster.cli.local_clamd import start_clamd
    from pipelines.recipe import DEFAULT_RECIPE

    presets = tuple((p.name, p.width, p.height, p.fit, p.quality) for p in DEFAULT_RECIPE.presets)
    images = len(paths)
    times: dict[str, list[Outcome]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        workdir = Path(tmp)
        clamd = start_clamd(SIGNATURES, workdir / "clamd")
        ways: dict = {}
        engine = "unknown"
        try:
            log(f"starting the farm's LocalCluster ({processes} workers) and {processes}+{processes} "
                f"pool processes (untimed)")
            from pipelines.upload.scan import ClamdScanner

            engine = ClamdScanner(clamd.url).version()[0]
            ways["farm"] = FarmWay(workdir, clamd, processes, farm_timeout)
            ways["pyvips"] = PoolWay(processes, _start_vips_child, vips_renditions, presets)
            ways["pillow"] = PoolWay(processes, _start_pillow_child, pillow_renditions, presets)
            warm = paths[:processes]
            for way in WAYS:
                ways[way].run(warm)
            log(f"warmed up on {len(warm)} photographs; timing {rounds} rounds of {images}")
            for index in range(rounds):
                for way in WAYS:
                    outcome = ways[way].run(paths)
                    times[way].append(outcome)
                    log(f"round {index + 1}/{rounds}  {way:<7}{outcome.seconds:7.2f} s"
                        f"{images / outcome.seconds:8.2f} images/s")
            concurrency = {way: ways[way].concurrency() for way in ("farm", "pyvips")}
            peaks = {way: ways[way].peak_rss_mib() for way in WAYS}
        finally:
            for way in ways.values():
                way.close()
            clamd.stop()

    per_way = {}
    for way in WAYS:
        rates = [images / o.seconds for o in times[way]]
        per_way[way] = {
            "images_per_s": round(statistics.median(rates), 3),
            "rounds_images_per_s": [round(r, 3) for r in rates],
            "rounds_seconds": [round(o.seconds, 3) for o in times[way]],
            "renditions": times[way][-1].renditions,
            "output_bytes": times[way][-1].bytes,
            "peak_rss_mib": peaks[way],
        }

    stages: dict[str, float] = {}
    for stage in times["farm"][0].stage_ms:
        totals = [o.stage_ms.get(stage, 0.0) for o in times["farm"]]
        stages[stage] = round(statistics.median(totals) / images, 1)
    per_way["farm"]["stage_ms_per_image"] = stages
    per_way["farm"]["worker_ms_per_image"] = round(
        statistics.median(o.seconds for o in times["farm"]) * processes * 1000 / images, 1)

    def ratio(way: str) -> dict:
        per_round = [b.seconds / a.seconds for a, b in zip(times["farm"], times[way])]
        return {"median": round(statistics.median(per_round), 3),
                "rounds": [round(r, 3) for r in per_round]}

    return {"ways": per_way, "ratios": {"farm/pyvips": ratio("pyvips"), "farm/pillow": ratio("pillow")},
            "vips_concurrency": concurrency, "clamd": engine,
            "recipe": [dict(zip(("name", "width", "height", "fit", "quality"), p)) for p in presets]}


def mirror_warnings(recipe) -> list[str]:
    """Where the bare loops no longer make what the farm makes (after a recipe or encoder change)."""
    warnings = []
    for p in recipe.presets:
        if getattr(p, "format", "webp") != "webp":
            warnings.append(f"preset {p.name}: format {p.format}, the bare loops encode WebP")
        if p.fit not in ("contain", "cover"):
            warnings.append(f"preset {p.name}: fit {p.fit}, the bare loops know contain and cover")
        if getattr(p, "crop", "centre") != "centre":
            warnings.append(f"preset {p.name}: crop {p.crop}, the bare loops crop the centre")
        if getattr(p, "target_ssim", None) is not None or getattr(p, "target_bytes", None) is not None:
            warnings.append(f"preset {p.name}: a quality search, the bare loops encode once")
    try:
        from pipelines.optimize.compress import ENCODERS
    except ImportError:
        return warnings
    effort = ENCODERS.get("webp", ("", {}))[1].get("effort")
    if effort != VIPS_EFFORT:
        warnings.append(f"the farm's WebP effort is {effort}, the bare loops use {VIPS_EFFORT}")
    return warnings


def code_info() -> dict:
    """Which Mediafarm code ran: the folder it was imported from and, in a git tree, the commit."""
    import cluster

    root = Path(cluster.__file__).resolve().parents[1]
    info = {"path": str(root), "git": None}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "pipelines", "cluster", "catalog")
        info["git"] = commit + (" with uncommitted changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def versions() -> dict:
    import PIL
    import distributed
    import pyvips
    from PIL import features

    from pipelines.vips import libvips_version

    return {"python": platform.python_version(), "libvips": ".".join(map(str, libvips_version())),
            "pyvips": pyvips.__version__, "pillow": PIL.__version__,
            "pillow_libwebp": features.version("webp"), "pillow_libjpeg": features.version("jpg"),
            "distributed": distributed.__version__}


def print_report(doc: dict) -> None:
    corpus, result = doc["corpus"], doc["result"]
    print(f"{corpus['count']} photographs from {corpus['package']} {corpus['version'] or ''}: "
          f"{corpus['megapixels_min']:g}-{corpus['megapixels_max']:g} MP, "
          f"{corpus['megapixels_total']:g} MP, {corpus['bytes_total'] / 1e6:.1f} MB")
    recipe = ", ".join(f"{p['name']} {p['width']}" + (f"x{p['height']}" if p['height'] else "")
                       + f" {p['fit']}" for p in result["recipe"])
    qualities = "/".join(str(q) for q in sorted({p["quality"] for p in result["recipe"]}))
    print(f"recipe: {recipe}; WebP Q{qualities}, effort {VIPS_EFFORT} "
          f"(Pillow method {PILLOW_WEBP_METHOD}), no metadata")
    v = doc["versions"]
    code = doc["code"]
    print(f"code: {code['path']}" + (f" (git {code['git']})" if code["git"] else ""))
    each = "process" if doc["processes"] == 1 else "processes"
    print(f"{doc['cores']} cores, {doc['processes']} {each} per way; libvips {v['libvips']}, "
          f"Pillow {v['pillow']} (libwebp {v['pillow_libwebp']}), clamd {result['clamd']}; "
          f"{doc['rounds']} rounds, interleaved; medians\n")
    print(f"{'way':<8}{'images/s':>10}{'renditions':>12}{'output kB':>11}  "
          f"{'peak RSS MiB':<16}images/s per round")
    for way, row in result["ways"].items():
        rounds = ", ".join(f"{r:.2f}" for r in row["rounds_images_per_s"])
        peaks = ", ".join(f"{m:.0f}" for m in row["peak_rss_mib"])
        print(f"{way:<8}{row['images_per_s']:>10.2f}{row['renditions']:>12}"
              f"{row['output_bytes'] / 1e3:>11.1f}  {peaks:<16}{rounds}")
    print()
    for name, target in (("farm/pyvips", " (target >= 0.8)"), ("farm/pillow", "")):
        r = result["ratios"][name]
        rounds = ", ".join(f"{x:.2f}" for x in r["rounds"])
        print(f"{name:<12}{r['median']:>6.2f}x{target}   rounds: {rounds}")
    farm = result["ways"]["farm"]
    if farm.get("stage_ms_per_image"):
        order = ("scan", "validate", "hash", "resize", "convert", "compress", "record")
        stages = sorted(farm["stage_ms_per_image"].items(),
                        key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        listed = ", ".join(f"{stage} {ms:.0f}" for stage, ms in stages)
        total = sum(ms for _, ms in stages)
        print(f"\nfarm stages, ms per image (medians): {listed}\n"
              f"  = {total:.0f} ms in stages of {farm['worker_ms_per_image']:.0f} ms worker time "
              f"per image (wall x workers / images); the rest is Dask, the client and idle tails")
    for warning in doc["warnings"]:
        print(f"warning: {warning}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="farm workers and pool children (default: one per core)")
    add_corpus_arguments(parser)
    parser.add_argument("--farm-timeout", type=float, default=120, metavar="SECONDS",
                        help="give up on a farm round that has not finished by then (default 120)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.processes < 1 or args.farm_timeout <= 0:
        parser.error("--rounds, --processes and --farm-timeout must be positive")

    paths = corpus_or_none(args)
    if paths is None:
        return 2
    try:
        from PIL import features
    except ImportError:
        print("error: Pillow is missing: .venv/bin/pip install 'pillow>=10' "
              "(it is in the test extra)", file=sys.stderr)
        return 2
    if not features.check("webp"):
        print("error: this Pillow was built without WebP", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from pipelines.recipe import DEFAULT_RECIPE

    warnings = mirror_warnings(DEFAULT_RECIPE)
    for warning in warnings:
        log(f"warning: {warning}")
    try:
        result = measure(paths, args.rounds, args.processes, args.farm_timeout, log)
    except FarmFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    doc = {"benchmark": "image renditions (issue 4)", "code": code_info(), "warnings": warnings,
           "date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
           "processes": args.processes, "rounds": args.rounds,
           "platform": platform.platform(), "versions": versions(),
           "encoder": {"format": "webp", "Q": 80, "vips_effort": VIPS_EFFORT,
                       "pillow_method": PILLOW_WEBP_METHOD, "keep": "none"},
           "corpus": describe(paths), "result": result}
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
