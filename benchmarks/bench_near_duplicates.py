"""Near-duplicates (issue 20, item 4): precision and recall of pHash groups, and the search's
throughput.

- ``evaluation``: the set of tests/near_duplicate_set.py made from the photo corpus
  (benchmarks/photos.py, 14 photographs at most 1600 px a side) and synthetic pictures of
  distinct content (10 smooth random fields, and 6 of ``cluster.cli.samples.scene``, the
  demo's gradients), 30 sources; each saved as JPEG q90 and copied 9 ways (resized to 50
  and 25%, JPEG q60 and q30, WebP q80 and q40, cropped 2 and 5%, EXIF edited), among 44
  unrelated pictures (40 random fields, 4 scenes). Every file is hashed as the resize stage
  hashes it (``resize_hashed`` with the default recipe's presets); groups are made at each
  threshold and scored pair by pair: a pair is true when both files copy one source. Also
  timed: ``resize`` against ``resize_hashed`` on the same files, the hash's own cost.
- ``search``: ``catalog.hamming.group_labels`` (multi-index hashing, then connected
  components) on ``--hashes`` random 64-bit hashes with 1% planted copies (up to the
  threshold's bits flipped), whole runs, median of ``--rounds``; the planted pairs are
  checked to be found.
- ``job``: ``catalog.near_duplicates.find`` end to end on a SQLite catalog of
  ``--catalog-assets`` ready assets of one owner (read the hashes, group, record the
  groups), median of ``--rounds``, each on a fresh copy of the groups table.

Nothing here asserts on timings. Run from the repository root::

    .venv/bin/python benchmarks/bench_near_duplicates.py                 # everything
    .venv/bin/python benchmarks/bench_near_duplicates.py --skip-search --skip-job
    .venv/bin/python benchmarks/bench_near_duplicates.py --hashes 1000000 --thresholds 4 6 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(REPO), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

import numpy as np  # noqa: E402

from catalog.hamming import group_labels, plan  # noqa: E402
from catalog.near_duplicates import DEFAULT_THRESHOLD  # noqa: E402
from cluster.cli.samples import scene  # noqa: E402
from photos import add_corpus_arguments, corpus_or_none  # noqa: E402
from pipelines.recipe import DEFAULT_RECIPE  # noqa: E402
from pipelines.transform.resize import resize, resize_hashed  # noqa: E402
from tests import near_duplicate_set as evaluation  # noqa: E402


def run_evaluation(photos: list[Path], thresholds: list[int]) -> dict:
    sources = ([evaluation.load(p) for p in photos]
               + [evaluation.synthetic(seed) for seed in range(10)]
               + [scene(1200, 800, seed) for seed in range(6)])
    unrelated = ([evaluation.synthetic(seed) for seed in range(100, 140)]
                 + [scene(1200, 800, seed) for seed in range(10, 14)])
    items = evaluation.build(sources, unrelated)
    presets = DEFAULT_RECIPE.presets
    plain, hashed, values = [], [], []
    for item in items:  # interleaved, so both see the same machine
        started = time.perf_counter()
        resize(item.data, presets)
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        values.append(resize_hashed(item.data, presets)[1])
        hashed.append(time.perf_counter() - started)
    values = np.array(values, dtype=np.uint64)
    scores = [evaluation.score(items, values, t).__dict__ for t in thresholds]
    # Each copy's distance to its source's own JPEG, by kind of copy.
    originals = {item.source: value for item, value in zip(items, values.tolist())
                 if item.source is not None and item.name == f"source-{item.source}"}
    distances: dict[str, list[int]] = {}
    for item, value in zip(items, values.tolist()):
        if item.source is not None and item.name != f"source-{item.source}":
            kind = item.name.split("-", 2)[2]
            distances.setdefault(kind, []).append((value ^ originals[item.source]).bit_count())
    by_copy = {kind: {"median": statistics.median(d), "max": max(d),
                      "within_default": sum(x <= DEFAULT_THRESHOLD for x in d) / len(d)}
               for kind, d in distances.items()}
    return {"sources": len(sources), "copies_per_source": len(evaluation.COPIES),
            "unrelated": len(unrelated), "files": len(items), "photos": len(photos),
            "resize_ms_median": 1000 * statistics.median(plain),
            "resize_hashed_ms_median": 1000 * statistics.median(hashed),
            "hash_ms_median": 1000 * statistics.median(np.array(hashed) - np.array(plain)),
            "distance_to_source": by_copy, "scores": scores}


def planted(count: int, threshold: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``count`` hashes: random ones, and 1% copies of them with 1..threshold bits flipped."""
    rng = np.random.default_rng(seed)
    copies = count // 100
    values = rng.integers(0, 2 ** 64 - 1, count - copies, dtype=np.uint64, endpoint=True)
    flipped = values[:copies].copy()
    for row in range(copies):
        bits = rng.choice(64, size=rng.integers(1, max(1, threshold) + 1), replace=False)
        flipped[row] ^= np.uint64(sum(1 << int(b) for b in bits))
    if threshold == 0:
        flipped = values[:copies].copy()
    return np.concatenate([values, flipped]), copies


def run_search(count: int, thresholds: list[int], rounds: int) -> list[dict]:
    results = []
    for threshold in thresholds:
        values, copies = planted(count, threshold)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            labels = group_labels(values, threshold)
            times.append(time.perf_counter() - started)
        originals, copied = labels[:copies], labels[len(values) - copies:]
        assert (originals == copied).all(), "a planted copy was not found"
        median = statistics.median(times)
        m, k = plan(len(values), threshold)
        results.append({"hashes": len(values), "threshold": threshold, "bands": m,
                        "bands_per_key": k, "runs_s": times, "median_s": median,
                        "hashes_per_s": len(values) / median,
                        "groups": int((np.bincount(labels) > 1).sum())})
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def run_job(count: int, rounds: int) -> dict:
    """``find`` on a SQLite catalog of ``count`` ready assets with planted copies."""
    from sqlalchemy import delete, insert

    from catalog import Catalog, near_duplicates
    from catalog.models import Asset, Blob, NearDuplicateMember, PerceptualHash, Recipe

    values, _ = planted(count, DEFAULT_THRESHOLD, seed=1)
    signed = values.view(np.int64).tolist()
    with tempfile.TemporaryDirectory() as folder:
        catalog = Catalog(f"sqlite:///{folder}/catalog.db")
        catalog.upgrade()
        with catalog.engine.begin() as conn:
            conn.execute(insert(Recipe.__table__), [{"id": "r", "name": "r", "definition": {}}])
            digests = [f"{index:064x}" for index in range(len(signed))]
            conn.execute(insert(Blob.__table__), [
                {"sha256": d, "size": 1, "media_type": "image/jpeg", "store": "originals"}
                for d in digests])
            conn.execute(insert(PerceptualHash.__table__), [
                {"sha256": d, "phash": h, "algorithm": "imagehash-phash-64"}
                for d, h in zip(digests, signed)])
            conn.execute(insert(Asset.__table__), [
                {"id": f"{index:036d}", "owner": "bench", "source_uri": f"file:///{index}",
                 "status": "ready", "retryable": False, "sha256": d, "attempt": 1}
                for index, d in enumerate(digests)])
        times, report = [], None
        for _ in range(rounds):
            with catalog.engine.begin() as conn:
                conn.execute(delete(NearDuplicateMember.__table__))
            started = time.perf_counter()
            report = near_duplicates.find(catalog, "bench")
            times.append(time.perf_counter() - started)
            again = time.perf_counter()
            near_duplicates.find(catalog, "bench")  # nothing changed: nothing written
            rerun = time.perf_counter() - again
    median = statistics.median(times)
    return {"assets": len(signed), "catalog": "sqlite", "runs_s": times, "median_s": median,
            "assets_per_s": len(signed) / median, "rerun_unchanged_s": rerun, "report": report}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpus_arguments(parser)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[4, 6, 8, 10],
                        help="search thresholds to time (bits)")
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--catalog-assets", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-evaluation", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-job", action="store_true")
    args = parser.parse_args()
    out: dict = {"default_threshold": DEFAULT_THRESHOLD, "numpy": np.__version__}
    if not args.skip_evaluation:
        args.min_pixels = 0  # every photograph of the corpus, shrunk to 1600 px anyway
        photos = corpus_or_none(args)
        if photos is None:
            return 2
        out["evaluation"] = run_evaluation(photos, list(range(0, 24, 2)))
        print(json.dumps(out["evaluation"]["scores"]), file=sys.stderr)
    if not args.skip_search:
        out["search"] = run_search(args.hashes, args.thresholds, args.rounds)
    if not args.skip_job:
        out["job"] = run_job(args.catalog_assets, args.rounds)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
