"""The Dask worker plugin every Mediafarm worker runs, and what it finds out about its machine.

Registered by the Farm on its client, so it reaches every worker, including
workers that join later or come back after ``Client.restart()``. It refuses a
libvips too old to block untrusted loaders, sizes libvips' cache and threads
for one task per thread, checks that clamd answers and fails closed (its report
names the clamd.conf settings to change otherwise), and detects GPUs and the
hardware video engines FFmpeg can really open (data-centre cards have NVDEC
but no NVENC: each is tried, never assumed). It also registers the farm's metrics
(``cluster.metrics``) in the worker process, where Dask's own ``/metrics`` on the
worker's dashboard port serves them, and puts that URL in its report.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

from distributed.diagnostics.plugin import WorkerPlugin

from pipelines import vips
from pipelines.upload import scanner_check
from pipelines.upload.scanner_check import ScannerCheck


class MediafarmWorkerPlugin(WorkerPlugin):
    name = "mediafarm"

    def __init__(self, clamd_url: str | None = None, vips_cache_mb: int = 100,
                 vips_concurrency: int = 1, clamd_verdict: ScannerCheck | None = None) -> None:
        self.clamd_url = clamd_url
        # The farm's own check of this clamd, made while the cluster started: each worker
        # takes it rather than scanning the canaries again (seconds, per worker, at once).
        self.clamd_verdict = clamd_verdict
        self.vips_cache_mb = vips_cache_mb
        self.vips_concurrency = vips_concurrency
        self.report: dict = {}

    async def setup(self, worker) -> None:
        # Off the worker's event loop: clamd's canaries take seconds (and wait for a scan's
        # own check of the same clamd), and a blocked loop stops the worker answering the
        # scheduler, so its tasks and every plugin registration wait on it.
        self.report = await asyncio.to_thread(self._probe, dict(worker.state.total_resources))
        self.report["metrics"] = metrics_url(worker)

    def _probe(self, resources: dict) -> dict:
        import pyvips

        if self.clamd_verdict is not None:
            scanner_check.adopt(self.clamd_verdict)
        vips.harden()  # raises on libvips < 8.13: such a worker must not decode uploads
        pyvips.cache_set_max_mem(self.vips_cache_mb * 1024 * 1024)
        pyvips.cache_set_max(100)
        pyvips.concurrency_set(self.vips_concurrency)
        return {"libvips": vips.tool_versions()["libvips"],
                "untrusted_loaders_blocked": True,
                "vips_concurrency": self.vips_concurrency,
                "clamd": clamd_status(self.clamd_url),
                "gpus": detect_gpus(),
                "hardware_codecs": detect_hardware_codecs(),
                "resources": resources}


def metrics_url(worker) -> str | None:
    """Where this worker's metrics are scraped: Dask's ``/metrics`` on its dashboard port
    (one port per worker process, ephemeral unless ``--dashboard-address`` fixes it)."""
    from cluster import metrics  # noqa: F401 - registers the farm's metrics in this process

    server = getattr(worker, "http_server", None)
    if server is None or not getattr(server, "port", None):
        return None
    return f"http://{worker.ip}:{server.port}/metrics"


def clamd_status(url: str | None) -> str:
    """``ok: ...`` once clamd answers and is shown to fail closed; else what is wrong."""
    if not url:
        return "not configured"
    from pipelines.outcome import Failed
    from pipelines.upload.scan import ClamdScanner

    try:
        engine, signatures = ClamdScanner(url, timeout=5).version()
    except Failed as exc:
        return f"unreachable: {exc.message}"
    # The canaries take longer than a version; the verdict is kept for this process's scans.
    problem = scanner_check.problem(ClamdScanner(url, timeout=30))
    return problem or f"ok: {engine}, signatures {signatures}, fails closed"


def clamd_verdict(url: str | None) -> ScannerCheck | None:
    """This process's check of clamd at ``url`` (see ``scanner_check``), or None where there
    is no clamd or it does not answer: each worker then checks, and reports, on its own."""
    from pipelines.outcome import Failed
    from pipelines.upload.scan import ClamdScanner

    if not url:
        return None
    try:
        return scanner_check.check(ClamdScanner(url, timeout=30))
    except Failed:
        return None


def detect_gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi lists them; empty where there is no driver or no card."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in filter(None, out.splitlines()):
        index, name, memory = (part.strip() for part in line.split(","))
        gpus.append({"index": int(index), "name": name, "memory_mib": int(memory)})
    return gpus


def detect_hardware_codecs() -> dict[str, bool]:
    """Which NVENC encoders and NVDEC (cuvid) decoders open here, tried for real."""
    import av

    found = {}
    for name, mode in (("h264_nvenc", "w"), ("hevc_nvenc", "w"), ("av1_nvenc", "w"),
                       ("h264_cuvid", "r"), ("hevc_cuvid", "r"), ("av1_cuvid", "r")):
        try:
            codec = av.codec.Codec(name, mode)
        except Exception:  # noqa: BLE001 - not built into this FFmpeg
            found[name] = False
            continue
        found[name] = _opens(codec) if os.path.exists("/dev/nvidiactl") else False
    return found


def _opens(codec) -> bool:
    """Open the codec on a tiny frame size: the only proof that the engine exists."""
    import av

    try:
        context = av.codec.CodecContext.create(codec)
        if codec.is_encoder:
            context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
            context.time_base = "1/25"
        context.open()
        return True
    except Exception:  # noqa: BLE001 - no engine, no driver, or no free session
        return False


def worker_reports(client) -> dict[str, dict]:
    """Each worker's report, by address."""
    def report(dask_worker) -> dict:
        plugin = dask_worker.plugins.get(MediafarmWorkerPlugin.name)
        return plugin.report if plugin else {}
    return client.run(report)
