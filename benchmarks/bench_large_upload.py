"""Large sources over tus: peak memory per process role, and the source pass's throughput.

1. **Memory.** For each size (GiB), a real H.264 video is made with ffmpeg (320x240,
   constant 150 Mb/s: x264's CBR fills each frame up with filler data, so the file is
   large, valid and cheap to make and to decode). A fresh ``mediafarm serve`` starts on
   local stores in a temporary data folder, a scratch PostgreSQL database, the shared
   clamd and its own LocalCluster, with a recipe of one small rung (``h264`` 120p,
   ultrafast, no audio) and a poster thumbnail. After a warm-up upload of a small clip
   (so the workers have loaded PyAV and friends) the idle RSS of every process in the
   server's tree, of the tus client and of clamd is taken; then tuspy, in a subprocess,
   uploads the video in ``--chunk-mib`` PATCHes and the asset is polled until ``ready``.
   A thread samples RSS (psutil) every 0.2 s throughout. Reported per role: idle, peak,
   and peak minus idle (the issue's target: under 500 MiB, flat in the size).
   Sources over the scanner limit (``MEDIAFARM_SCAN_MAX_BYTES``, 2047 MiB) can only be
   taken with ``MEDIAFARM_SCAN_OVERSIZE=skip``, which the server gets; the output says
   which sizes were scanned and which were not.
2. **Throughput.** The smallest size under the scanner limit: the farm's source pass
   (``cluster.source_pass.read_pass`` plus promote, on a local originals store: one
   read, INSTREAM to clamd, SHA-256 and the staged copy) against the pair
   ``sha256sum FILE`` then ``clamdscan --stream FILE`` (whole commands, same clamd),
   rounds interleaved after an untimed warm-up of each, medians quoted. clamd runs with
   ``DisableCache yes``: otherwise it would answer a repeated file from its cache of
   clean MD5s without scanning it.

    .venv/bin/python benchmarks/bench_large_upload.py --sizes 1,2,4

Generated files live under a temporary folder (``--workdir`` to choose its parent),
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog import upgrade  # noqa: E402
from cluster.cli.local_clamd import start_clamd  # noqa: E402
from cluster.config import SCAN_MAX_BYTES, STORE_NAMES, Settings, StoreConfig  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.services.api_server import Deployment, start_api_server, wait_terminal  # noqa: E402
from tests.services.postgres import scratch_database, server_url  # noqa: E402

MiB, GiB = 2**20, 2**30
BIT_RATE = 150_000_000  # under MediaLimits.max_bit_rate (200 Mb/s)
SAMPLE_S = 0.2
TRACE = False  # --trace: every sample to stderr (processes/MiB per role)
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
RECIPE = """\
name: bench-large
presets:
  - {name: thumb, width: 150, height: 150, fit: cover}
video:
  - {name: h264, heights: [120], speed: ultrafast, audio_codec: null}
"""
# The client: waits for a line on stdin (so its idle RSS can be taken), then uploads.
CLIENT = """
import json, sys
from tusclient import client
url, token, path, chunk = sys.argv[1:5]
tus = client.TusClient(url, headers={"Authorization": "Bearer " + token})
uploader = tus.uploader(path, chunk_size=int(chunk),
                        metadata={"filename": "large.mp4", "filetype": "video/mp4"})
print("ready", flush=True)
sys.stdin.readline()
uploader.upload()
print(json.dumps({"url": uploader.url, "offset": uploader.offset}), flush=True)
"""
ROLES = ("server", "workers", "worker children", "other children", "client", "clamd")


def make_video(path: Path, size: int) -> Path:
    """An H.264 MP4 of about ``size`` bytes: 320x240, 25 fps, CBR at BIT_RATE."""
    seconds = size * 8 / BIT_RATE
    rate = str(BIT_RATE)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", f"{seconds:.2f}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "50", "-b:v", rate, "-minrate", rate,
                    "-maxrate", rate, "-bufsize", "8M", "-x264-params", "nal-hrd=cbr",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


# -- sampling ---------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """RSS of every process by role, every SAMPLE_S: the server's tree, the client, clamd."""

    def __init__(self, server_pid: int, clamd_pid: int) -> None:
        super().__init__(daemon=True)
        self.server = psutil.Process(server_pid)
        self.clamd_pid = clamd_pid
        self.client_pid: int | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Forget what was seen: peaks start again from the next sample."""
        with self.lock:
            self.peak = dict.fromkeys(ROLES, 0)
            self.peak_process: dict[str, tuple[int, str]] = {}
            self.history: list[dict[str, int]] = []

    def roles(self) -> dict[str, list[psutil.Process]]:
        found: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
        found["server"].append(self.server)
        for child in self.server.children():
            try:
                tracker = "resource_tracker" in " ".join(child.cmdline())
            except psutil.Error:
                continue
            if tracker:
                found["other children"].append(child)
                continue
            found["workers"].append(child)
            try:
                found["worker children"].extend(child.children(recursive=True))
            except psutil.Error:
                pass
        for role, pid in (("client", self.client_pid), ("clamd", self.clamd_pid)):
            try:
                if pid is not None:
                    found[role].append(psutil.Process(pid))
            except psutil.NoSuchProcess:  # the client once its upload is done
                pass
        return found

    def sample(self) -> dict[str, int]:
        totals = dict.fromkeys(ROLES, 0)
        biggest: dict[str, tuple[int, str]] = {}
        try:
            found = self.roles()
        except psutil.NoSuchProcess:  # the server itself is gone: nothing to sample
            return totals
        for role, processes in found.items():
            for process in processes:
                try:
                    rss = process.memory_info().rss
                except psutil.Error:  # it ended between the listing and the reading
                    continue
                totals[role] += rss
                if rss > biggest.get(role, (0, ""))[0]:
                    biggest[role] = (rss, f"pid {process.pid}")
        if TRACE:
            print(f"{time.monotonic():.1f} " + " ".join(
                f"{r}:{len(ps)}/{totals[r] >> 20}" for r, ps in found.items()), file=sys.stderr)
        with self.lock:
            self.history.append(totals)
            for role, value in totals.items():
                if value > self.peak[role]:
                    self.peak[role] = value
                    self.peak_process[role] = biggest.get(role, (0, ""))
        return totals

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_S):
            self.sample()

    def median(self) -> dict[str, int]:
        with self.lock:
            return {role: int(statistics.median(s[role] for s in self.history))
                    for role in ROLES} if self.history else dict.fromkeys(ROLES, 0)


# -- one size through the server ---------------------------------------------------------------


def start_client(deployment: Deployment, token: str, path: Path, chunk: int) -> subprocess.Popen:
    client = subprocess.Popen([sys.executable, "-c", CLIENT, f"{deployment.url}/v1/tus", token,
                               str(path), str(chunk)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=NO_PROXY_ENV)
    if client.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the tus client did not start: {client.stderr.read()}")
    return client


def upload_to_ready(http: httpx.Client, deployment: Deployment, token: str,
                    client: subprocess.Popen, timeout: float) -> tuple[dict, float, float]:
    """Let the waiting client upload; the asset once terminal, the upload's and ingest's s."""
    started = time.monotonic()
    client.stdin.write("go\n")
    client.stdin.flush()
    out, err = client.communicate(timeout=timeout)
    if client.returncode != 0:
        raise RuntimeError(f"the tus client failed: {err}")
    uploaded = time.monotonic()
    url = json.loads(out.splitlines()[-1])["url"]
    headers = {"Authorization": f"Bearer {token}"}
    state = http.get(url, headers=headers).json()
    asset = wait_terminal(http, state["asset"]["status_url"], headers, timeout=timeout)
    return asset, uploaded - started, time.monotonic() - uploaded


def measure_size(gib: float, scratch: Path, clamd, pg_base: str, chunk: int, warmup: Path,
                 timeout: float) -> dict:
    folder = scratch / f"size-{gib:g}"
    folder.mkdir()
    target = int(gib * GiB)
    video = make_video(folder / "large.mp4", target)
    size = video.stat().st_size
    recipe = folder / "recipe.yml"
    recipe.write_text(RECIPE)
    with ExitStack() as stack, httpx.Client(timeout=60, trust_env=False) as http:
        catalog_url = stack.enter_context(scratch_database(pg_base))
        upgrade(catalog_url)
        settings = make_settings(folder / "data", catalog_url, clamd.url)
        server = start_api_server(settings, folder, extra_env={
            "MEDIAFARM_SCAN_OVERSIZE": "skip", "MEDIAFARM_API_RATE_LIMIT": "1000",
            "MEDIAFARM_API_RATE_BURST": "1000", "MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL": "0",
            # Slack for a PATCH on a loaded machine; the default is 30 s.
            "MEDIAFARM_API_BODY_TIMEOUT": "300"}, recipe=recipe, timeout=180)
        stack.callback(server.stop)
        deployment = Deployment(server, settings)
        token = deployment.token("bench")["Authorization"].removeprefix("Bearer ")
        sampler = Sampler(server.process.pid, clamd.process.pid)
        sampler.start()
        stack.callback(sampler.stopping.set)
        time.sleep(3)
        cold = sampler.median()
        # Warm-up: a small clip through the same path, so the workers have imported the
        # media stack before the idle baseline is taken.
        warm = start_client(deployment, token, warmup, chunk)
        asset, _, _ = upload_to_ready(http, deployment, token, warm, timeout)
        if asset["status"] != "ready":
            raise RuntimeError(f"the warm-up clip ended {asset['status']}: {asset}")
        client = start_client(deployment, token, video, chunk)
        sampler.client_pid = client.pid
        time.sleep(2)
        sampler.reset()
        time.sleep(4)
        idle = sampler.median()
        sampler.reset()
        asset, upload_s, ingest_s = upload_to_ready(http, deployment, token, client, timeout)
        sampler.client_pid = None
        sampler.stopping.set()
        sampler.join()
        peak = dict(sampler.peak)
        scan = scan_row(catalog_url, asset.get("id"))
    video.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    return {"gib": gib, "bytes": size, "status": asset["status"], "reason": asset.get("reason"),
            "renditions": sorted(r["preset"] for r in asset.get("renditions") or []),
            "scan": scan, "upload_s": upload_s, "ingest_s": ingest_s,
            "cold_idle": cold, "idle": idle, "peak": peak,
            "peak_process": {role: name for role, (_, name) in sampler.peak_process.items()}}


def scan_row(catalog_url: str, asset_id: str | None) -> str:
    """How the scan stage ended for the asset: scanned, or skipped over the scanner limit."""
    from sqlalchemy import select

    from catalog import connect
    from catalog.models import StageRun

    with connect(catalog_url).connect() as conn:
        rows = conn.execute(select(StageRun.status, StageRun.details)
                            .where(StageRun.asset_id == asset_id, StageRun.stage == "scan")
                            .order_by(StageRun.attempt)).all()
    if not rows:
        return "?"
    status, details = rows[-1]
    return details.get("scan", status) if status == "skipped" else f"scanned by clamd ({status})"


# -- throughput -------------------------------------------------------------------------------


def throughput(video: Path, clamd, folder: Path, rounds: int) -> dict:
    """The source pass (scan + hash + stage + promote) against sha256sum + clamdscan --stream."""
    import cluster.source_pass as source_pass
    from cluster.storage.stores import open_stores
    from pipelines.upload.scan import ClamdScanner, scan

    clamdscan = shutil.which("clamdscan")
    if clamdscan is None:
        raise SystemExit("clamdscan is not installed (Debian: apt-get install clamdscan)")
    local = {n: StoreConfig((folder / "stores" / n).as_uri()) for n in STORE_NAMES}
    settings = Settings(str(folder), f"sqlite:///{folder}/c.sqlite", clamd.url, local)
    stores = open_stores(settings)
    scanner = ClamdScanner(clamd.url)
    scan(b"warm", scanner)  # the canaries, once
    conf = clamd.config_path

    def ours() -> float:
        started = time.perf_counter()
        passed = source_pass.read_pass(str(video), settings, stores, scanner)
        stores["originals"].promote(passed.staged)
        elapsed = time.perf_counter() - started
        if not passed.details.get("clean"):
            raise RuntimeError(f"the source pass did not scan the file clean: {passed.details}")
        stores["originals"].delete(passed.staged.sha256)
        return elapsed

    def pair() -> tuple[float, float]:
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(video)], check=True, capture_output=True)
        hashed = time.perf_counter()
        subprocess.run([clamdscan, "--stream", "--no-summary", "-c", str(conf), str(video)],
                       check=True, capture_output=True)
        return hashed - started, time.perf_counter() - hashed

    ours(), pair()  # untimed: the page cache, clamd's first stream
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(ours())
        theirs.append(pair())
    size = video.stat().st_size
    ours_s = statistics.median(mine)
    pair_s = statistics.median(h + c for h, c in theirs)
    return {"bytes": size, "rounds": rounds, "ours_s": mine, "pair_s": theirs,
            "ours_median_s": ours_s, "pair_median_s": pair_s,
            "sha256sum_median_s": statistics.median(h for h, _ in theirs),
            "clamdscan_median_s": statistics.median(c for _, c in theirs),
            "ratio": statistics.median(sum(p) / m for m, p in zip(mine, theirs)),
            "clamdscan": subprocess.run([clamdscan, "--version"], capture_output=True,
                                        text=True).stdout.strip()}


# -- report -----------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / MiB:.0f}"


def print_memory(results: list[dict]) -> None:
    print("\nPeak RSS above idle, per role (MiB; idle taken after a warm-up upload):")
    print(f"| {'size':>8} | {'scan':<32} | {'role':<16} | {'idle':>6} | {'peak':>6} | "
          f"{'peak-idle':>9} |")
    print(f"|{'-' * 10}|{'-' * 34}|{'-' * 18}|{'-' * 8}|{'-' * 8}|{'-' * 11}|")
    for result in results:
        label = f"{result['bytes'] / GiB:.2f} GiB"
        for role in ROLES:
            idle, peak = result["idle"][role], result["peak"][role]
            if not idle and not peak:
                continue
            print(f"| {label:>8} | {result['scan']:<32} | {role:<16} | {mib(idle):>6} | "
                  f"{mib(peak):>6} | {mib(peak - idle):>9} |")
    for result in results:
        print(f"{result['bytes'] / GiB:.2f} GiB ({result['bytes']} bytes): {result['status']}"
              f"{' ' + result['reason'] if result['reason'] else ''}, renditions "
              f"{', '.join(result['renditions'])}; upload {result['upload_s']:.1f} s "
              f"({result['bytes'] / result['upload_s'] / MiB:.0f} MiB/s), upload end to ready "
              f"{result['ingest_s']:.1f} s; idle right after start (cold): "
              + ", ".join(f"{role} {mib(v)}" for role, v in result["cold_idle"].items() if v))


def print_throughput(result: dict) -> None:
    size = result["bytes"]
    print(f"\nThroughput on {size / GiB:.2f} GiB ({size} bytes), medians of {result['rounds']} "
          "interleaved rounds:")
    print(f"  source pass (scan + hash + stage + promote): {result['ours_median_s']:.2f} s "
          f"({size / result['ours_median_s'] / MiB:.0f} MiB/s)")
    print(f"  sha256sum + clamdscan --stream:              {result['pair_median_s']:.2f} s "
          f"({size / result['pair_median_s'] / MiB:.0f} MiB/s; sha256sum "
          f"{result['sha256sum_median_s']:.2f} s, clamdscan {result['clamdscan_median_s']:.2f} s)")
    print(f"  ours/pair throughput (median of per-round ratios): {result['ratio']:.2f} "
          "(target >= 0.8)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4", help="GiB, comma-separated (0.05 for a smoke run)")
    parser.add_argument("--chunk-mib", type=float, default=32, help="tuspy's PATCH size")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="per upload and ingest, s")
    parser.add_argument("--workdir", help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--trace", action="store_true",
                        help="print every sample to stderr: processes/MiB per role")
    args = parser.parse_args()
    global TRACE
    TRACE = args.trace
    sizes = [float(s) for s in args.sizes.split(",")]
    chunk = int(args.chunk_mib * MiB)
    report: dict = {"sizes_gib": sizes, "chunk_bytes": chunk, "cores": os.cpu_count(),
                    "scan_max_bytes": SCAN_MAX_BYTES}
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GiB:.0f} GiB RAM; "
          f"load average {os.getloadavg()[0]:.1f}; tuspy PATCH size {chunk / MiB:g} MiB; "
          f"scanner limit {SCAN_MAX_BYTES / MiB:.0f} MiB: sources over it are taken unscanned "
          "(MEDIAFARM_SCAN_OVERSIZE=skip, set for this benchmark's server)")
    with tempfile.TemporaryDirectory(prefix="bench-large-", dir=args.workdir) as scratch_name:
        scratch = Path(scratch_name)
        clamd = start_clamd(ROOT / "tests" / "signatures", scratch / "clamd",
                            overrides={"DisableCache": "yes"})
        try:
            if not args.skip_memory:
                warmup = make_video(scratch / "warmup.mp4", 4 * MiB)
                results = []
                with server_url() as pg_base:
                    for gib in sizes:
                        print(f"... {gib:g} GiB: making the video, uploading, ingesting",
                              file=sys.stderr, flush=True)
                        results.append(measure_size(gib, scratch, clamd, pg_base, chunk, warmup,
                                                    args.timeout))
                report["memory"] = results
                print_memory(results)
            if not args.skip_throughput:
                scannable = [g for g in sizes if g * GiB <= SCAN_MAX_BYTES]
                if not scannable:
                    print("\nThroughput skipped: no size is under the scanner limit")
                else:
                    gib = min(scannable)
                    print(f"... throughput on {gib:g} GiB", file=sys.stderr, flush=True)
                    video = make_video(scratch / "throughput.mp4", int(gib * GiB))
                    report["throughput"] = throughput(video, clamd, scratch / "pass", args.rounds)
                    print_throughput(report["throughput"])
        finally:
            clamd.stop()
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
