"""JPEG decode and resize on the GPU against the CPU path, on the photo corpus (issue 9).

On the photographs of ``benchmarks/photos.py`` (Debian's ``lomiri-wallpapers-16.04``,
13 JPEGs of 4.5 to 15.9 MP) and the default recipe
(``pipelines.recipe.DEFAULT_RECIPE``: thumb 150x150 cover, small 400, medium
800, large 1600 contain), this times two things, each done the CPU way and the
GPU way, in this one process:

- intermediate: the one decode every preset is cut from, at the size the
  largest preset needs. CPU: ``pyvips.Image.thumbnail_buffer(data, w,
  height=h, size="down", fail_on=truncated).copy_memory()``, with libvips'
  JPEG shrink-on-load, as ``pipelines/transform/resize.py`` does. GPU:
  ``pipelines.transform.gpu.gpu_intermediate`` (nvImageCodec decodes the full
  image, EXIF orientation applied; CuPy shrinks it with Lanczos3 as two float32
  matrix products; the result is copied back to host memory).
- resize stage: ``resize(data, DEFAULT_RECIPE.presets, device=...)``, the
  whole stage as a worker runs it (header, intermediate, the four presets cut
  from it on the CPU, rasters in host memory).

libvips runs with one thread (``VIPS_CONCURRENCY=1``), as each farm worker
process does: the CPU figures are per worker process, and a machine runs one
per core. The file bytes are read before timing. The first photograph goes
through every way once, untimed (CUDA context, nvJPEG and cuBLAS start-up).
Rounds interleave the ways; reported are the median seconds per round over the
corpus, images per second, and the CPU/GPU ratio as the median of per-round
ratios (above 1: the GPU way is faster). The report also gives each
photograph's SSIM between the CPU and GPU intermediates, and names any
photograph the GPU path handed back to the CPU (its rendition would say
``path: cpu``). Nothing here asserts on timings.

Needs an NVIDIA GPU, the ``gpu`` extra (``pip install -e '.[gpu]'``) and the
photographs (``benchmarks/photos.py --install`` as root); without a GPU it says
so and exits with status 2::

    .venv/bin/python benchmarks/bench_gpu.py                # 5 rounds
    .venv/bin/python benchmarks/bench_gpu.py --rounds 9 --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ["VIPS_CONCURRENCY"] = "1"  # read when libvips starts, i.e. on import: as a worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photos import add_corpus_arguments, corpus_or_none, describe  # noqa: E402

WAYS = ("intermediate", "resize")


def intermediate_size(data: bytes) -> tuple[int, int, int, int]:
    """(upright width, height, intermediate width, height) for the default recipe."""
    from pipelines.recipe import DEFAULT_RECIPE
    from pipelines.transform.resize import _header, _scale

    header = _header(data)
    width, height = header.width, header.height
    scale = min(1.0, max(_scale(p, width, height) for p in DEFAULT_RECIPE.presets))
    return width, height, math.ceil(width * scale), math.ceil(height * scale)


def cpu_intermediate(data: bytes):
    import pyvips

    _, _, w, h = intermediate_size(data)
    return pyvips.Image.thumbnail_buffer(data, w, height=h, size="down",
                                         option_string="fail_on=truncated").copy_memory()


def gpu_intermediate(data: bytes):
    from pipelines.transform.gpu import gpu_intermediate as make

    return make(data, *intermediate_size(data))


def resize_on(device: str) -> Callable[[bytes], list]:
    from pipelines.recipe import DEFAULT_RECIPE
    from pipelines.transform.resize import resize

    return lambda data: resize(data, DEFAULT_RECIPE.presets, device=device)


def timed(function: Callable[[bytes], object], photos: list[bytes]) -> tuple[float, list]:
    results = []
    start = time.perf_counter()
    for data in photos:
        results.append(function(data))
    return time.perf_counter() - start, results


def measure(paths: list[Path], rounds: int, log: Callable[[str], None]) -> dict:
    from pipelines.optimize.metrics import ssim
    from pipelines.transform.gpu import GPU_PATH

    photos = [path.read_bytes() for path in paths]
    ways = {"intermediate": {"cpu": cpu_intermediate, "gpu": gpu_intermediate},
            "resize": {"cpu": resize_on("cpu"), "gpu": resize_on("gpu")}}
    for devices in ways.values():  # start-up, untimed
        for function in devices.values():
            function(photos[0])
    seconds: dict[str, dict[str, list[float]]] = {w: {"cpu": [], "gpu": []} for w in WAYS}
    last: dict[tuple[str, str], list] = {}
    for index in range(rounds):
        for way, devices in ways.items():
            for device, function in devices.items():
                took, last[way, device] = timed(function, photos)
                seconds[way][device].append(took)
        log(f"round {index + 1}/{rounds}: " + ", ".join(
            f"{way} cpu {seconds[way]['cpu'][-1]:.2f} s gpu {seconds[way]['gpu'][-1]:.2f} s"
            for way in WAYS))
    result: dict = {"ways": {}}
    for way in WAYS:
        per_round = [c / g for c, g in zip(seconds[way]["cpu"], seconds[way]["gpu"])]
        result["ways"][way] = {
            device: {"seconds_median": statistics.median(times),
                     "images_per_s": len(photos) / statistics.median(times),
                     "rounds_seconds": [round(t, 4) for t in times]}
            for device, times in seconds[way].items()}
        result["ways"][way]["ratio_cpu_over_gpu"] = {
            "median": statistics.median(per_round), "rounds": [round(r, 3) for r in per_round]}
    similarity = [ssim(c, g) for c, g in zip(last["intermediate", "cpu"],
                                             last["intermediate", "gpu"])]
    result["ssim_cpu_vs_gpu_intermediate"] = {
        path.name: round(value, 4) for path, value in zip(paths, similarity)}
    result["fell_back_to_cpu"] = [
        path.name for path, rasters in zip(paths, last["resize", "gpu"])
        if any(r.path != GPU_PATH for r in rasters)]
    return result


def versions() -> dict:
    import cupy
    import pyvips
    from nvidia import nvimgcodec

    from cluster.worker_plugin import detect_gpus
    from pipelines.vips import libvips_version

    return {"python": platform.python_version(),
            "libvips": ".".join(map(str, libvips_version())), "pyvips": pyvips.__version__,
            "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "nvimgcodec": getattr(nvimgcodec, "__version__", "unknown"),
            "gpus": [g["name"] for g in detect_gpus()]}


def print_report(doc: dict) -> None:
    corpus, result, v = doc["corpus"], doc["result"], doc["versions"]
    print(f"{corpus['count']} photographs from {corpus['package']} {corpus['version'] or ''}: "
          f"{corpus['megapixels_min']:g}-{corpus['megapixels_max']:g} MP, "
          f"{corpus['megapixels_total']:g} MP; default recipe (largest preset 1600)")
    print(f"GPU: {', '.join(v['gpus'])}; CuPy {v['cupy']} (CUDA runtime {v['cuda_runtime']}), "
          f"nvImageCodec {v['nvimgcodec']}; libvips {v['libvips']} with 1 thread; "
          f"{doc['rounds']} rounds, interleaved; medians\n")
    print(f"{'what':<14}{'cpu s':>8}{'gpu s':>8}{'cpu img/s':>11}{'gpu img/s':>11}"
          f"{'cpu/gpu':>9}   per round")
    for way in WAYS:
        row = result["ways"][way]
        ratio = row["ratio_cpu_over_gpu"]
        print(f"{way:<14}{row['cpu']['seconds_median']:>8.2f}{row['gpu']['seconds_median']:>8.2f}"
              f"{row['cpu']['images_per_s']:>11.2f}{row['gpu']['images_per_s']:>11.2f}"
              f"{ratio['median']:>8.2f}x   {', '.join(f'{r:.2f}' for r in ratio['rounds'])}")
    values = list(result["ssim_cpu_vs_gpu_intermediate"].values())
    print(f"\nSSIM of the GPU intermediate against the CPU one: min {min(values):.4f}, "
          f"median {statistics.median(values):.4f}")
    if result["fell_back_to_cpu"]:
        print(f"warning: the GPU path handed these to the CPU: {', '.join(result['fell_back_to_cpu'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    add_corpus_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    from cluster.placement import gpu_image_problem

    problem = gpu_image_problem()
    if problem:
        print(f"error: this benchmark needs an NVIDIA GPU and the gpu extra "
              f"(pip install -e '.[gpu]'): {problem}", file=sys.stderr)
        return 2
    paths = corpus_or_none(args)
    if paths is None:
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = measure(paths, args.rounds, log)
    doc = {"benchmark": "GPU JPEG decode and resize (issue 9)",
           "date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
           "rounds": args.rounds, "platform": platform.platform(), "versions": versions(),
           "corpus": describe(paths), "result": result}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
