"""The farm against its peers, whole commands on the same images (issue 19, item 6).

Two sets of images, made once per run in a temporary folder:

- *large* (``--large``, default 40): the photographs of ``benchmarks/photos.py``
  (13 JPEGs of 4.5 to 15.9 MP), repeated in turn up to N. Every file gets its
  own bytes with the same pixels: a JPEG comment segment (``FF FE``, "bench_peers
  copy K of NAME") is inserted right after the SOI marker, byte for byte
  otherwise, so decoding costs the same while the SHA-256 (the farm's dedupe) and
  the MD5 (clamd's cache of clean files) differ between copies;
- *small* (``--small``, default 2,000): 640x480 JPEGs (Q 88) of
  ``cluster.cli.samples.scene(640, 480, seed=K)``, a colour field with grain
  seeded by K, so every image has its own content.

The work per image, the same in every tool (``pipelines.recipe.DEFAULT_RECIPE``):
decode; ``thumb`` 150x150 cover (centre crop) and ``small`` 400, ``medium`` 800,
``large`` 1600 contain, never enlarged; WebP quality 80, effort (libwebp's
method) 2, no metadata; the SHA-256 of the source; every rendition written to a
fresh folder. The tools, each one command run as a subprocess:

- ``farm-ingest``: ``mediafarm ingest SRC_DIR --json``, the per-asset path (a
  graph of seven tasks per asset: scan, validate, hash, resize, convert, compress,
  record);
- ``farm-backfill``: ``mediafarm backfill SRC_DIR --json``, the bulk path (the
  same stages fused into partitions, ``cluster.bulk.run_partition``);
  both with ``MEDIAFARM_DATA_DIR`` a fresh folder (SQLite catalog, local stores:
  the embedded set-up; the farm also stores each original) and
  ``MEDIAFARM_CLAMD_URL`` a clamd that this benchmark starts with
  ``cluster.cli.local_clamd.start_clamd`` on ``tests/signatures`` and restarts,
  untimed, before every farm command (clamd caches the MD5 of clean files and
  would not scan the same bytes twice). Their own LocalCluster: one
  single-threaded worker per core. clamd is a service beside the command: its
  time on the cores counts (it scans every file) but its memory is not in the
  command's tree;
- ``pyvips``, ``pillow``: ``python benchmarks/peer_tools.py pyvips|pillow ...``, a
  spawn pool of one process per core running ``bench_images.vips_renditions`` /
  ``bench_images.pillow_renditions`` (see bench_images.py);
- ``daft``: ``python benchmarks/peer_tools.py daft ...``: ``daft.from_glob_path``
  -> ``download`` -> a ``@daft.func`` per preset calling pyvips
  (``bench_images.vips_rendition``) -> ``upload``. A UDF, not Daft's image
  functions: ``resize`` only stretches to one fixed size (no contain or cover
  per row), ``decode_image`` has no JPEG shrink-on-load and ``encode_image`` no
  WebP quality or method, so they cannot do this work. Daft's own defaults
  (native runner, libvips' default threads);
- ``ray``: ``python benchmarks/peer_tools.py ray ...``: a local Ray
  (``num_cpus`` = cores), ``ray.data.read_binary_files`` -> ``map`` with pyvips;
- ``sharp``: ``node benchmarks/peers/sharp_renditions.js ...`` (sharp, Node's
  libvips binding; one libvips thread per image, one image in flight per core).

Daft (``pip install daft``), Ray (``pip install "ray[data]"``; both are the
``peers`` extra: ``pip install -e '.[peers]'``) and sharp (``npm ci --prefix
benchmarks/peers``) are optional: a peer that is not installed is reported so,
with the reason, and the others run.

Measured: wall seconds from the command's launch to its exit (its start-up
included: a command's fixed cost is part of what a user waits for), rounds
interleaved with the tools' order rotated each round, medians quoted; the peak
of the summed resident memory (RSS) of the command's whole process tree
(psutil, every 0.2 s; pages shared between processes count once per process);
the ratio of each tool's median wall time to ``farm-ingest``'s on the same set.
Every command must exit 0 and leave 4 renditions per image (the farm: every
asset ``ready`` in its catalog with 4 renditions, each in the renditions store;
the others: 4 files per image in their output folder): a tool that did less
fails the benchmark (exit 1) rather than win it. Nothing asserts on time.

Run from the repository root (needs clamd and the photographs, as bench_images.py)::

    .venv/bin/python benchmarks/bench_peers.py                          # 40 + 2,000 images, 3 rounds
    .venv/bin/python benchmarks/bench_peers.py --large 6 --small 50 --rounds 1
    .venv/bin/python benchmarks/bench_peers.py --tools farm-ingest,pyvips,sharp --json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from photos import add_corpus_arguments, corpus_or_none  # noqa: E402

SIGNATURES = ROOT / "tests" / "signatures"
PEER_TOOLS = BENCH_DIR / "peer_tools.py"
SHARP_DIR = BENCH_DIR / "peers"
SHARP_SCRIPT = SHARP_DIR / "sharp_renditions.js"
TOOLS = ("farm-ingest", "farm-backfill", "pyvips", "pillow", "daft", "ray", "sharp")
BASELINE = "farm-ingest"
MIB = 1024 * 1024


# -- the two sets -----------------------------------------------------------------------------

def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment after SOI: other bytes, the same pixels."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    body = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def make_large(photos: list[Path], count: int, folder: Path) -> list[Path]:
    """``count`` distinct files from the photographs, in turn (see the module's docstring)."""
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        copy = index // len(photos)
        path = folder / f"{index:04d}-{photo.stem}.jpg"
        path.write_bytes(with_comment(photo.read_bytes(), f"bench_peers copy {copy} of {photo.name}"))
        paths.append(path)
    return paths


def make_small(count: int, folder: Path) -> list[Path]:
    """``count`` 640x480 JPEGs of the sample scene, each seeded differently."""
    from cluster.cli.samples import scene

    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"scene-{index:05d}.jpg"
        scene(640, 480, index).jpegsave(str(path), Q=88)
        paths.append(path)
    return paths


# -- which peers are there --------------------------------------------------------------------

def missing_reason(tool: str) -> str | None:
    """Why ``tool`` cannot run here, or None when it can."""
    if tool == "daft" and importlib.util.find_spec("daft") is None:
        return "no module named daft in this Python (pip install daft, or the peers extra)"
    if tool == "ray":
        if importlib.util.find_spec("ray") is None:
            return 'no module named ray in this Python (pip install "ray[data]", or the peers extra)'
        done = subprocess.run([sys.executable, "-c", "import ray.data"], capture_output=True,
                              text=True)
        if done.returncode:
            return "ray is there but ray.data does not import: " + _last_line(done.stderr)
    if tool == "sharp":
        node = shutil.which("node")
        if node is None:
            return "no node on PATH (sharp is a Node module)"
        done = subprocess.run([node, "-e", "require('sharp')"], cwd=SHARP_DIR,
                              capture_output=True, text=True)
        if done.returncode:
            return (f"sharp does not load ({_last_line(done.stderr)}); "
                    f"npm ci --prefix benchmarks/peers")
    if tool.startswith("farm") and _mediafarm() is None:
        return "no mediafarm command next to this Python (pip install -e .)"
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"


def _mediafarm() -> str | None:
    found = Path(sys.executable).parent / "mediafarm"
    return str(found) if found.is_file() else shutil.which("mediafarm")


def versions(tools: list[str]) -> dict:
    import PIL
    import pyvips

    from pipelines.vips import libvips_version

    found = {"python": platform.python_version(), "pyvips": pyvips.__version__,
             "libvips": ".".join(map(str, libvips_version())), "pillow": PIL.__version__}
    for name in ("daft", "ray", "distributed"):
        if name in tools or name == "distributed":
            try:
                found[name] = __import__(name).__version__
            except ImportError:
                pass
    if "sharp" in tools:
        done = subprocess.run(["node", "-e", "const s=require('sharp');"
                               "console.log(s.versions.sharp+' libvips '+s.versions.vips)"],
                              cwd=SHARP_DIR, capture_output=True, text=True)
        found["sharp"] = done.stdout.strip()
        found["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                       text=True).stdout.strip()
    return found


# -- one command ------------------------------------------------------------------------------

class TreeRss:
    """Samples the summed RSS of a process and all its descendants every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / MIB


class ToolFailed(RuntimeError):
    """A command failed, or left fewer renditions than asked for."""


def command(tool: str, source: Path, out: Path, presets: list, processes: int) -> list[str]:
    spec = json.dumps(presets)
    if tool == "farm-ingest":
        return [_mediafarm(), "ingest", str(source), "--json"]
    if tool == "farm-backfill":
        return [_mediafarm(), "backfill", str(source), "--json"]
    if tool == "sharp":
        return ["node", str(SHARP_SCRIPT), str(source), str(out), spec, str(processes)]
    return [sys.executable, str(PEER_TOOLS), tool, str(source), str(out), spec, str(processes)]


def environment(tool: str, out: Path, clamd_url: str) -> dict[str, str]:
    """The caller's environment without its Mediafarm and Dask settings, plus the run's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDIAFARM_", "DASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    if tool.startswith("farm"):
        env["MEDIAFARM_DATA_DIR"] = str(out)
        env["MEDIAFARM_CLAMD_URL"] = clamd_url
    return env


def run_tool(tool: str, source: Path, out: Path, presets: list, processes: int,
             clamd_url: str, timeout: float) -> tuple[float, float, str]:
    """Run one command: (wall seconds, peak tree RSS MiB, its stdout). Raises ToolFailed."""
    out.mkdir(parents=True)
    argv = command(tool, source, out, presets, processes)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=ROOT,
                                   env=environment(tool, out, clamd_url))
        sampler = TreeRss(process.pid)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            code = None
        seconds = time.perf_counter() - start
        peak = sampler.stop()
        stdout.seek(0)
        stderr.seek(0)
        text, errors = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if code is None:
        raise ToolFailed(f"{tool}: still running after {timeout:g} s (--timeout); killed")
    if code != 0:
        raise ToolFailed(f"{tool}: exit status {code}: {_last_line(errors)}")
    return seconds, peak, text


def _kill_tree(process: subprocess.Popen) -> None:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for proc in [*children, psutil.Process(process.pid)]:
        try:
            proc.kill()
        except psutil.Error:
            pass
    process.wait()


def check_outputs(tool: str, out: Path, images: int, presets: list) -> int:
    """The renditions the command left (raises ToolFailed when any is missing)."""
    expected = images * len(presets)
    if tool.startswith("farm"):
        found = _farm_renditions(out, images)
    else:
        found = sum(1 for p in out.rglob("*") if p.is_file() and p.stat().st_size > 0)
    if found != expected:
        raise ToolFailed(f"{tool}: {found} renditions for {images} images, expected {expected}")
    return found


def _farm_renditions(data_dir: Path, images: int) -> int:
    """Renditions of ready assets in the farm's catalog whose object is in its store."""
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM assets GROUP BY status"))
        outputs = [row[0] for row in db.execute("SELECT output_sha256 FROM renditions")]
    if statuses.get("ready", 0) != images:
        raise ToolFailed(f"farm: assets by status {statuses}, expected {images} ready")
    stored = {p.name for p in (data_dir / "stores" / "renditions").rglob("*") if p.is_file()}
    missing = [digest for digest in outputs if not any(digest in name for name in stored)]
    if missing:
        raise ToolFailed(f"farm: {len(missing)} renditions in the catalog are not in the store")
    return len(outputs)


# -- the run ----------------------------------------------------------------------------------

def measure(sets: dict[str, list[Path]], tools: list[str], rounds: int, processes: int,
            timeout: float, workdir: Path, log) -> dict:
    from cluster.cli.local_clamd import start_clamd
    from pipelines.recipe import DEFAULT_RECIPE

    presets = [[p.name, p.width, p.height, p.fit, p.quality] for p in DEFAULT_RECIPE.presets]
    runs: dict = {name: {tool: [] for tool in tools} for name in sets}
    failures: dict = {name: {} for name in sets}
    clamd = start_clamd(SIGNATURES, workdir / "clamd")
    try:
        for index in range(rounds):
            order = tools[index % len(tools):] + tools[:index % len(tools)]
            for name, paths in sets.items():
                for tool in order:
                    if tool in failures[name]:
                        continue
                    if tool.startswith("farm"):
                        clamd.start_again()  # an empty MD5 cache: every file scanned
                    out = workdir / "out" / f"{name}-{tool}-{index}"
                    try:
                        seconds, peak, _ = run_tool(tool, paths[0].parent, out, presets,
                                                    processes, clamd.url, timeout)
                        check_outputs(tool, out, len(paths), presets)
                    except ToolFailed as exc:
                        failures[name][tool] = str(exc)
                        log(f"round {index + 1}/{rounds} {name:<6} {tool:<14} FAILED: {exc}")
                        continue
                    finally:
                        shutil.rmtree(out, ignore_errors=True)
                    runs[name][tool].append({"seconds": seconds, "peak_rss_mib": peak})
                    log(f"round {index + 1}/{rounds} {name:<6} {tool:<14}{seconds:8.2f} s"
                        f"{len(paths) / seconds:9.1f} images/s{peak:8.0f} MiB")
    finally:
        clamd.stop()
    return {"presets": presets, "sets": {name: summarise(runs[name], failures[name], len(paths))
                                         for name, paths in sets.items()}}


def summarise(runs: dict, failures: dict, images: int) -> dict:
    rows = {}
    base = runs.get(BASELINE) if BASELINE not in failures else None
    for tool, done in runs.items():
        if tool in failures:
            rows[tool] = {"failed": failures[tool]}
            continue
        seconds = [r["seconds"] for r in done]
        row = {"wall_s": round(statistics.median(seconds), 2),
               "images_per_s": round(images / statistics.median(seconds), 2),
               "rounds_s": [round(s, 2) for s in seconds],
               "peak_rss_mib": round(max(r["peak_rss_mib"] for r in done))}
        if base:
            per_round = [r["seconds"] / b["seconds"] for r, b in zip(done, base)]
            row["wall_vs_farm_ingest"] = round(statistics.median(per_round), 3)
        rows[tool] = row
    return {"images": images, "tools": rows}


def print_report(doc: dict) -> None:
    info = doc["info"]
    print(f"{info['cores']} cores, {info['processes']} processes or workers per tool; "
          f"{doc['rounds']} rounds, interleaved, tool order rotated; medians; "
          f"load average before {info['load_before']}, after {info['load_after']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()))
    for tool, reason in doc["not_installed"].items():
        print(f"{tool}: not installed ({reason})")
    for name, result in doc["result"]["sets"].items():
        print(f"\n{name}: {result['images']} images ({doc['sets'][name]})")
        print(f"{'tool':<15}{'wall s':>8}{'images/s':>10}{'x farm-ingest':>15}{'peak RSS MiB':>14}"
              f"  rounds s")
        for tool, row in result["tools"].items():
            if "failed" in row:
                print(f"{tool:<15}FAILED: {row['failed']}")
                continue
            ratio = row.get("wall_vs_farm_ingest")
            print(f"{tool:<15}{row['wall_s']:>8.2f}{row['images_per_s']:>10.1f}"
                  f"{'' if ratio is None else f'{ratio:.3f}':>15}{row['peak_rss_mib']:>14}  "
                  + ", ".join(f"{s:.2f}" for s in row["rounds_s"]))
    print("\nx farm-ingest: the tool's wall time over farm-ingest's in the same round "
          "(median over rounds); below 1 is faster than the farm's per-asset path")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=40, help="large photographs (default 40; 0 skips)")
    parser.add_argument("--small", type=int, default=2000, help="640x480 images (default 2000; 0 skips)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)} (default all)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="pool processes, Ray CPUs and sharp's images in flight (default: "
                             "cores, as the farm's LocalCluster workers)")
    parser.add_argument("--timeout", type=float, default=900, metavar="SECONDS",
                        help="kill a command still running after this long (default 900)")
    add_corpus_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or not tools:
        parser.error(f"unknown tools {unknown}; pick from {', '.join(TOOLS)}")
    if args.rounds < 1 or args.large < 0 or args.small < 0 or not (args.large or args.small):
        parser.error("--rounds must be positive, --large and --small >= 0, one of them > 0")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    not_installed = {tool: why for tool in tools if (why := missing_reason(tool))}
    for tool, why in not_installed.items():
        log(f"{tool}: not installed ({why}); the others run")
    runnable = [tool for tool in tools if tool not in not_installed]
    if not runnable:
        return 2
    photos = corpus_or_none(args) if args.large else []
    if photos is None:
        return 2
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        sets: dict[str, list[Path]] = {}
        described: dict[str, str] = {}
        start = time.perf_counter()
        if args.large:
            sets["large"] = make_large(photos, args.large, workdir / "large")
            described["large"] = (f"{len(photos)} photographs of 4.5-15.9 MP repeated, "
                                  f"{sum(p.stat().st_size for p in sets['large']) / 1e6:.1f} MB")
        if args.small:
            sets["small"] = make_small(args.small, workdir / "small")
            described["small"] = (f"640x480 JPEG Q88, "
                                  f"{sum(p.stat().st_size for p in sets['small']) / 1e6:.1f} MB")
        log(f"made the sets in {time.perf_counter() - start:.1f} s: "
            + ", ".join(f"{name} {len(paths)}" for name, paths in sets.items()))
        result = measure(sets, runnable, args.rounds, args.processes, args.timeout, workdir, log)
    doc = {"benchmark": "peers (issue 19, item 6)", "date": datetime.date.today().isoformat(),
           "info": {"cores": os.cpu_count(), "processes": args.processes,
                    "platform": platform.platform(), "load_before": load_before,
                    "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())},
           "rounds": args.rounds, "tools": tools, "not_installed": not_installed,
           "versions": versions(runnable), "sets": described, "result": result}
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print_report(doc)
    failed = any("failed" in row for s in result["sets"].values() for row in s["tools"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
