"""The Python peers of ``benchmarks/bench_peers.py``, one per command.

    python benchmarks/peer_tools.py TOOL SRC_DIR OUT_DIR PRESETS_JSON PROCESSES

makes, for every file in SRC_DIR, the renditions PRESETS_JSON names
(``[[name, width, height or null, "cover" or "contain", quality], ...]``) as
``OUT_DIR/...webp``, and computes each source's SHA-256. TOOL is one of:

- ``pyvips``: a ``multiprocessing`` spawn pool of PROCESSES children
  (``VIPS_CONCURRENCY=1``) running ``bench_images.vips_renditions``;
- ``pillow``: the same pool running ``bench_images.pillow_renditions``;
- ``daft``: ``daft.from_glob_path`` -> ``daft.functions.download`` -> one
  ``@daft.func`` per preset calling ``bench_images.vips_rendition`` (pyvips) on
  the downloaded bytes -> ``daft.functions.upload`` into ``OUT_DIR/<preset>/``;
  the SHA-256 in a ``@daft.func`` too. Daft's own image functions cannot do
  this work: ``resize(w, h)`` stretches to one fixed size (no contain, no
  cover crop, per row), ``decode_image`` decodes every pixel (no JPEG
  shrink-on-load), and ``encode_image`` takes no WebP quality or method;
- ``ray``: ``ray.data.read_binary_files`` -> ``map`` (SHA-256 and
  ``bench_images.vips_rendition`` per preset, writing the files) ->
  ``take_all``, on a local Ray started by the command.

Each prints one JSON line: images, renditions and bytes. Only the standard
library and bench_images at module level: the pool's children import this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_images  # noqa: E402


def _sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def pool_vips(job: bench_images.Job) -> tuple[int, int, int, int]:
    _sha256(job[0])
    return bench_images.vips_renditions(job)


def pool_pillow(job: bench_images.Job) -> tuple[int, int, int, int]:
    _sha256(job[0])
    return bench_images.pillow_renditions(job)


def run_pool(tool: str, sources: list[str], out: str, presets: tuple, processes: int) -> dict:
    import multiprocessing

    start, render = {"pyvips": (bench_images._start_vips_child, pool_vips),
                     "pillow": (bench_images._start_pillow_child, pool_pillow)}[tool]
    jobs = [(source, presets, out) for source in sources]
    with multiprocessing.get_context("spawn").Pool(processes, initializer=start) as pool:
        results = list(pool.imap_unordered(render, jobs, chunksize=1))
    return {"images": len(results), "renditions": sum(r[2] for r in results),
            "bytes": sum(r[3] for r in results)}


def run_daft(source_dir: str, out: str, presets: tuple, processes: int) -> dict:
    import daft
    from daft import col
    from daft.functions import download, upload

    @daft.func(return_dtype=daft.DataType.string())
    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def rendition(preset):
        @daft.func(return_dtype=daft.DataType.binary())
        def render(data: bytes) -> bytes:
            return bench_images.vips_rendition(data, preset)
        return render

    df = daft.from_glob_path(f"{source_dir}/*")
    df = df.with_column("data", download(col("path")))
    df = df.with_column("sha256", sha256(col("data")))
    for preset in presets:
        name = preset[0]
        df = df.with_column(name, rendition(preset)(col("data")))
        df = df.with_column(f"{name}_uri", upload(col(name), f"{out}/{name}"))
    df = df.select("path", "sha256", *(f"{p[0]}_uri" for p in presets),
                   *(col(p[0]).length().alias(f"{p[0]}_bytes") for p in presets))
    rows = df.to_pydict()
    written = sum(uri is not None for p in presets for uri in rows[f"{p[0]}_uri"])
    return {"images": len(rows["path"]), "renditions": written,
            "bytes": sum(n or 0 for p in presets for n in rows[f"{p[0]}_bytes"])}


def run_ray(source_dir: str, out: str, presets: tuple, processes: int) -> dict:
    import ray

    here = str(Path(__file__).resolve().parent)  # Ray's workers import bench_images from here
    path = os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))
    ray.init(num_cpus=processes, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"VIPS_CONCURRENCY": "1", "PYTHONPATH": path}})

    def render(row: dict) -> dict:
        data = row["bytes"]
        hashlib.sha256(data).hexdigest()
        stem = Path(row["path"]).stem
        total = 0
        for preset in presets:
            webp = bench_images.vips_rendition(data, preset)
            Path(out, f"{stem}.{preset[0]}.webp").write_bytes(webp)
            total += len(webp)
        return {"renditions": len(presets), "bytes": total}

    ds = ray.data.read_binary_files(source_dir, include_paths=True).map(render)
    rows = ds.take_all()
    ray.shutdown()
    return {"images": len(rows), "renditions": sum(r["renditions"] for r in rows),
            "bytes": sum(r["bytes"] for r in rows)}


def main(argv: list[str]) -> int:
    tool, source_dir, out, presets_json, processes = argv
    presets = tuple(tuple(p) for p in json.loads(presets_json))
    if tool in ("pyvips", "pillow"):
        sources = sorted(str(p) for p in Path(source_dir).iterdir())
        result = run_pool(tool, sources, out, presets, int(processes))
    elif tool == "daft":
        result = run_daft(source_dir, out, presets, int(processes))
    elif tool == "ray":
        result = run_ray(source_dir, out, presets, int(processes))
    else:
        print(f"unknown tool {tool!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
