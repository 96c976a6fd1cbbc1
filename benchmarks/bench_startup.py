"""Fixed cost of an embedded run: what a one-photo `mediafarm ingest` costs beyond the photo.

Three whole commands, timed from outside, rounds interleaved, medians quoted:

- ``farm``: ``mediafarm ingest PHOTO --force`` with a LocalCluster of its own (two
  single-threaded workers on this machine), a SQLite catalog already migrated and the
  benchmark's own clamd: start-up, one asset through every stage, shut-down;
- ``dask``: the floor under it: ``python -c`` that imports distributed, starts the same
  LocalCluster (two worker processes with nannies), connects a client and closes both;
- ``bare``: a bare pyvips script doing the photo's image work (decode, the default
  recipe's sizes, WebP), plus its SHA-256: what the photo itself costs.

``farm - bare`` is the farm's fixed cost; ``farm - dask`` what the farm adds to Dask's
own. A fourth measurement runs inside one process (``--phases``): the time to import
the farm, to start a ``Farm`` (migrations checked, cluster started, clamd checked,
worker plugin registered) and to close it, so that the docs can say where the rest goes.

Run from the repository root (clamd installed, as for the tests)::

    .venv/bin/python benchmarks/bench_startup.py            # 5 rounds
    .venv/bin/python benchmarks/bench_startup.py --rounds 3 --json
    # and the same command from another checkout, interleaved (an A/B of a change):
    git worktree add /tmp/base BASE_COMMIT
    .venv/bin/python benchmarks/bench_startup.py --baseline /tmp/base

Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster.cli.local_clamd import start_clamd  # noqa: E402
from cluster.cli.samples import scene  # noqa: E402

SIGNATURES = ROOT / "tests" / "signatures"
PYTHON = sys.executable

DASK_ONLY = """
from distributed import Client, LocalCluster
if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    Client(cluster).close()
    cluster.close()
"""

BARE = """
import hashlib, sys, pyvips
data = open(sys.argv[1], "rb").read()
hashlib.sha256(data).hexdigest()
for width, height, crop in ((150, 150, "centre"), (400, 400, None), (800, 800, None), (1600, 1600, None)):
    kwargs = {"crop": crop} if crop else {}
    image = pyvips.Image.thumbnail_buffer(data, width, height=height, size="down", **kwargs)
    image.webpsave_buffer(Q=80)
"""

PHASES = """
import time
start = time.perf_counter()
from cluster.farm import Farm
imported = time.perf_counter()
if __name__ == "__main__":
    farm = Farm()
    ready = time.perf_counter()
    farm.close()
    closed = time.perf_counter()
    print(f"{imported - start:.3f} {ready - imported:.3f} {closed - ready:.3f}")
"""


def photo(folder: Path) -> Path:
    """A 4000x3000 JPEG (about a 12 MP phone photo): the project's sample scene."""
    path = folder / "photo.jpg"
    scene(4000, 3000, seed=1).jpegsave(str(path), Q=90)
    return path


def timed(argv: list[str], env: dict, root: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env={**env, "PYTHONPATH": str(root)}, check=True, cwd=root,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline", type=Path,
                        help="another checkout of the farm, whose ingest runs as 'base'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mediafarm-bench-startup-") as scratch:
        folder = Path(scratch)
        clamd = start_clamd(SIGNATURES, folder / "clamd")
        try:
            source = photo(folder)
            env = {**os.environ, "MEDIAFARM_DATA_DIR": str(folder / "data"),
                   "MEDIAFARM_CLAMD_URL": clamd.url, "PYTHONPATH": str(ROOT)}
            commands = {
                "farm": [PYTHON, "-m", "cluster.cli.main", "ingest", str(source), "--force", "-q"],
                "dask": [PYTHON, "-c", DASK_ONLY],
                "bare": [PYTHON, "-c", BARE, str(source)],
            }
            if args.baseline:
                commands["base"] = commands["farm"]
            timed(commands["farm"], env)  # warm-up: migrates the catalog, fills the page cache
            times: dict[str, list[float]] = {name: [] for name in commands}
            phases = []
            for _ in range(args.rounds):
                for name, argv in commands.items():
                    # The baseline's own code (its folder is the path's first entry under -m);
                    # the same data folder, photo and clamd.
                    root = args.baseline.resolve() if name == "base" else ROOT
                    times[name].append(timed(argv, env, root))
                out = subprocess.run([PYTHON, "-c", PHASES], env=env, check=True, cwd=ROOT,
                                     capture_output=True, text=True).stdout.split()
                phases.append([float(x) for x in out])
        finally:
            clamd.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    phase = [statistics.median(p[i] for p in phases) for i in range(3)]
    result = {"rounds": args.rounds, "cpus": os.cpu_count(), "median_s": medians,
              "all_s": times, "farm_fixed_cost_s": medians["farm"] - medians["bare"],
              "farm_over_dask_s": medians["farm"] - medians["dask"],
              "phases_median_s": {"import": phase[0], "start": phase[1], "close": phase[2]}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, value in medians.items():
        print(f"{name:5} {value:6.2f} s   (rounds: {', '.join(f'{v:.2f}' for v in times[name])})")
    print(f"farm fixed cost (farm - bare): {result['farm_fixed_cost_s']:.2f} s; "
          f"farm over Dask's own (farm - dask): {result['farm_over_dask_s']:.2f} s")
    print(f"in one process: import {phase[0]:.2f} s, Farm() {phase[1]:.2f} s, "
          f"close {phase[2]:.2f} s")


if __name__ == "__main__":
    main()
