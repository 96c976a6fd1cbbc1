"""Which device a stage uses: Dask resources on the client's side, the choice on the worker's.

A worker started by ``mediafarm worker`` on a machine with NVIDIA GPUs declares
the Dask resource ``GPU=N``. With the ``gpu`` setting at ``auto`` (the default),
the client asks for ``{"GPU": 1}`` for the resize stage when some worker
declares one, and a task running on such a worker takes the GPU paths its
process can open: JPEG decode and resize (``pipelines.transform.gpu``) and
NVDEC video decode (the ``*_cuvid`` decoders ``detect_hardware_codecs`` opened).
Without a GPU worker, or with ``gpu: off``, everything runs on the CPU. The
decisions are pure functions; the ``*_here`` ones read the running worker.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Iterable, Mapping

from pipelines.recipe import NVENC_CODECS

GPU_RESOURCE = "GPU"
RESOURCES_TTL_S = 5.0
_ASK = {GPU_RESOURCE: 1}
_recent: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client -> (when, answer)


def gpu_resources(workers: Mapping[str, Mapping] | Iterable[Mapping],
                  gpu: str = "auto") -> dict[str, float] | None:
    """``{"GPU": 1}`` when the setting allows it and some worker declares a GPU, else None.

    ``workers`` is ``client.scheduler_info()["workers"]`` (or its values).
    Asking for a resource no worker has would leave the task waiting for ever,
    so without a GPU worker the answer is None: the task goes anywhere.
    """
    if gpu == "off":
        return None
    infos = workers.values() if isinstance(workers, Mapping) else workers
    if any((info.get("resources") or {}).get(GPU_RESOURCE, 0) > 0 for info in infos):
        return dict(_ASK)
    return None


def resize_resources(client, gpu: str = "auto") -> dict[str, float] | None:
    """``gpu_resources`` for the cluster behind ``client``, for the resize stage's submit.

    Asking the scheduler costs a round trip, and a graph is submitted per asset:
    the answer is kept for ``RESOURCES_TTL_S`` seconds per client, so a GPU
    worker that joins is used within that time.
    """
    if gpu == "off":
        return None
    now = time.monotonic()
    cached = _recent.get(client)
    if cached is None or now - cached[0] >= RESOURCES_TTL_S:
        cached = _recent[client] = (now, gpu_resources(client.scheduler_info()["workers"], gpu))
    return dict(cached[1]) if cached[1] else None


def chunk_resources(client, codec: str) -> dict[str, float] | None:
    """Chunks of a preset that names an NVENC encoder go to GPU workers when there are any.

    The recipe asked for that encoder, so the ``gpu`` setting does not apply;
    other codecs' chunks go anywhere (and cost no call to the scheduler).
    """
    if codec not in NVENC_CODECS:
        return None
    return gpu_resources(client.scheduler_info()["workers"])


def image_device(gpu: str, worker_gpus: float, decoder_problem: str | None) -> str:
    """``"gpu"`` when the setting allows it, this worker declares a GPU and the decoder loads."""
    return "gpu" if gpu != "off" and worker_gpus > 0 and decoder_problem is None else "cpu"


def video_decoders(gpu: str, worker_gpus: float,
                   hardware_codecs: Mapping[str, bool]) -> tuple[str, ...]:
    """The NVDEC (``*_cuvid``) decoders this worker may use: those that opened, when allowed."""
    if gpu == "off" or worker_gpus <= 0:
        return ()
    return tuple(sorted(name for name, opens in hardware_codecs.items()
                        if opens and name.endswith("_cuvid")))


def worker_gpus() -> float:
    """The GPU resource the Dask worker running this code declares; 0 outside a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return 0
    return worker.state.total_resources.get(GPU_RESOURCE, 0)


def image_device_here(gpu: str) -> str:
    """``image_device`` for the running worker: what ``resize(..., device=)`` should get."""
    from pipelines.transform.gpu import gpu_decoder_available

    gpus = worker_gpus()
    return image_device(gpu, gpus, gpu_decoder_available() if gpus > 0 else "no GPU resource")


def video_decoders_here(gpu: str) -> tuple[str, ...]:
    """``video_decoders`` for the running worker: what ``transcode(..., decoders=)`` should get."""
    gpus = worker_gpus()
    if gpu == "off" or gpus <= 0:
        return ()
    return video_decoders(gpu, gpus, _hardware_codecs())


def no_gpu_reason() -> str | None:
    """Why this machine has no NVIDIA GPU to use, in words, or None when nvidia-smi lists one."""
    import shutil

    from cluster.worker_plugin import detect_gpus

    if detect_gpus():
        return None
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU: nvidia-smi not found"
    return "no NVIDIA GPU: nvidia-smi lists none"


def gpu_image_problem() -> str | None:
    """Why JPEGs cannot be decoded and resized on a GPU here, or None: the card, then the libraries."""
    from pipelines.transform.gpu import gpu_decoder_available

    return no_gpu_reason() or gpu_decoder_available()


@functools.cache
def _hardware_codecs() -> dict[str, bool]:
    # Opening every NVENC and NVDEC codec takes a while: once per worker process.
    from cluster.worker_plugin import detect_hardware_codecs

    return detect_hardware_codecs()
