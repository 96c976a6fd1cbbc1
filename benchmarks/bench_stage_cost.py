"""The image stages' own cost, one process, one thread: the farm's stage functions
against a bare pyvips loop on the same photographs (issue 19, item 2).

No Dask, no catalog, no clamd: per photograph, the functions the per-asset graph's
tasks call (``validate``, SHA-256, ``resize`` for all of the default recipe's presets at
once, a pickle round trip of the rasters as Dask would make between workers,
``to_srgb``, ``compress``), timed stage by stage, against the bare loop that
benchmarks/bench_images.py runs in its pyvips pool (its ``vips_renditions``: read the
file, then per preset ``pyvips.Image.thumbnail_buffer`` and ``webpsave_buffer(Q=80,
effort=2)``). Both run with ``VIPS_CONCURRENCY`` 1, as the farm's workers do, in rounds
interleaved photograph by photograph; medians over rounds of the per-photo means.

What this separates: what the stage code costs, from what running it in the cluster
adds (Dask, the catalog, clamd beside the workers on the same cores), which
benchmarks/bench_images.py measures whole.

Run from the repository root (the photographs as for bench_images.py)::

    .venv/bin/python benchmarks/bench_stage_cost.py --rounds 3

Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyvips  # noqa: E402

from bench_images import vips_renditions  # noqa: E402  (benchmarks/ is on the path as a script)
from photos import photo_corpus  # noqa: E402
from pipelines.optimize.compress import compress  # noqa: E402
from pipelines.recipe import DEFAULT_RECIPE  # noqa: E402
from pipelines.transform.convert import to_srgb  # noqa: E402
from pipelines.transform.resize import resize  # noqa: E402
from pipelines.upload.validate import validate  # noqa: E402

STAGES = ("validate", "hash", "resize", "carry", "convert", "compress")
# The default recipe's presets as bench_images.py hands them to its pool.
PLAIN_PRESETS = tuple((p.name, p.width, p.height, p.fit, p.quality) for p in DEFAULT_RECIPE.presets)


def farm_stages(data: bytes) -> dict[str, float]:
    presets = DEFAULT_RECIPE.presets
    marks = [time.perf_counter()]
    validate(data)
    marks.append(time.perf_counter())
    hashlib.sha256(data).hexdigest()
    marks.append(time.perf_counter())
    rasters = list(resize(data, presets))
    marks.append(time.perf_counter())
    rasters = pickle.loads(pickle.dumps(rasters, protocol=pickle.HIGHEST_PROTOCOL))
    marks.append(time.perf_counter())
    rasters = [to_srgb(r) for r in rasters]
    marks.append(time.perf_counter())
    for raster, preset in zip(rasters, presets):
        compress(raster, preset)
    marks.append(time.perf_counter())
    return {stage: b - a for stage, a, b in zip(STAGES, marks, marks[1:])}


def bare_loop(path: Path) -> float:
    """bench_images.py's pyvips pool work for one photograph, timed in this process."""
    start = time.perf_counter()
    vips_renditions((str(path), PLAIN_PRESETS))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pyvips.concurrency_set(1)
    paths = photo_corpus()
    photos = [(path, path.read_bytes()) for path in paths]
    farm_stages(photos[0][1]), bare_loop(paths[0])  # warm-up
    farm_rounds, bare_rounds = [], []
    for _ in range(args.rounds):
        totals, bare = dict.fromkeys(STAGES, 0.0), 0.0
        for path, data in photos:
            for stage, seconds in farm_stages(data).items():
                totals[stage] += seconds
            bare += bare_loop(path)
        farm_rounds.append({k: v / len(photos) for k, v in totals.items()})
        bare_rounds.append(bare / len(photos))
    per_stage = {s: statistics.median(r[s] for r in farm_rounds) for s in STAGES}
    farm = statistics.median(sum(r.values()) for r in farm_rounds)
    bare = statistics.median(bare_rounds)
    result = {"photos": len(photos), "rounds": args.rounds, "farm_ms": round(farm * 1000, 1),
              "bare_ms": round(bare * 1000, 1), "farm_over_bare": round(farm / bare, 3),
              "stages_ms": {k: round(v * 1000, 1) for k, v in per_stage.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(photos)} photographs, {args.rounds} rounds, one thread, medians per photograph:")
    print("farm stages: " + ", ".join(f"{k} {v:.0f} ms" for k, v in result["stages_ms"].items())
          + f" = {result['farm_ms']:.0f} ms")
    print(f"bare pyvips loop: {result['bare_ms']:.0f} ms;  farm / bare = {result['farm_over_bare']:.2f}")


if __name__ == "__main__":
    main()
