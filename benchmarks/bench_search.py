"""Search latency on a catalog of a million assets in PostgreSQL (issue 20).

A fresh database ``mediafarm_bench_<hex>`` is migrated, then filled with COPY
(``bench_export.fill_postgresql``, untimed): ``--assets`` assets (default one million),
each with its original's blob and typed metadata; 80% images, 15% videos, 5% audio;
created over three years; 96% ready, 2% failed, 2% rejected. One owner, ``archive``,
holds ``--big-share`` of them (default 40%: one large library), the rest are spread
over ``--owners`` owners (default 600, about 1,000 each). A third of the assets carry
one to three tags from a vocabulary of 200 (some common, most rare); a tenth are in one
of each owner's collections.

Each query below is a ``catalog.search.SearchQuery`` run through ``catalog.search.search``
(building the statement, PostgreSQL, the page's tags, the rows as dicts): the time of
the whole call, on a warm connection pool. Queries run for the large owner and for a
small one picked per round; rounds interleave all queries (``--rounds``, default 40),
and p50 and p95 are reported per query and over all of them. Nothing asserts on time.

Run from the repository root (needs PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_search.py                   # 1,000,000 assets
    .venv/bin/python benchmarks/bench_search.py --assets 100000 --rounds 10 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]

from bench_export import bench_database, fill_postgresql  # noqa: E402

from catalog import Catalog  # noqa: E402
from catalog.search import SearchQuery, search  # noqa: E402

START = datetime(2023, 1, 1, tzinfo=timezone.utc)
SPAN_S = 3 * 365 * 86400
CAMERAS = [("Apple", "iPhone 15 Pro"), ("Apple", "iPhone 13"), ("samsung", "SM-S918B"),
           ("Google", "Pixel 8"), ("Canon", "EOS R5"), ("Canon", "EOS 5D Mark IV"),
           ("NIKON CORPORATION", "NIKON Z 6_2"), ("FUJIFILM", "X-T5"), ("SONY", "ILCE-7M4"),
           ("DJI", "FC3582")]
WORDS = ["beach", "party", "family", "trip", "garden", "concert", "dog", "cat", "wedding",
         "snow", "city", "sunset", "forest", "birthday", "food", "school"]
TAGS = [f"tag{n:03}" for n in range(190)] + ["holiday", "favourite", "work", "family", "print",
                                              "raw", "edited", "shared", "archive", "review"]


def _sha(kind: str, n: int) -> str:
    return hashlib.sha256(f"{kind}{n}".encode()).hexdigest()


def _owner(n: int, assets: int, big_share: float, owners: int) -> str:
    return "archive" if n < assets * big_share else f"user{n % owners:04}"


def tables(assets: int, big_share: float, owners: int, seed: int = 7) -> list[tuple]:
    """(table, columns, rows) to COPY, rows made lazily."""
    rng = random.Random(seed)
    kinds = rng.choices(["image", "video", "audio"], [80, 15, 5], k=assets)

    def blobs():
        for n, kind in enumerate(kinds):
            make, model = CAMERAS[n % len(CAMERAS)] if kind != "audio" else (None, None)
            captured = START + timedelta(seconds=(n * 7919) % SPAN_S) if kind != "audio" else None
            media = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/mpeg"}[kind]
            width, height = ((4032, 3024) if n % 3 else (1920, 1080)) if kind != "audio" else (
                None, None)
            duration = (n % 600) + 0.5 if kind != "image" else None
            video_codec = ("h264" if n % 2 else "hevc") if kind == "video" else None
            audio_codec = ("aac" if kind == "video" else "mp3") if kind != "image" else None
            yield (_sha("b", n), 100_000 + (n * 2654435761) % 9_000_000, media, "originals", None, kind, width,
                   height, duration, video_codec, audio_codec, captured, make, model,
                   f"Song {n}" if kind == "audio" else None, START)

    def assets_rows():
        for n, kind in enumerate(kinds):
            owner = _owner(n, assets, big_share, owners)
            ext = {"image": "jpg", "video": "mp4", "audio": "mp3"}[kind]
            name = f"{WORDS[n % len(WORDS)]}_{n:07}.{ext}"
            status = "ready" if n % 50 > 1 else ("failed" if n % 50 == 0 else "rejected")
            created = START + timedelta(seconds=(n * 104729) % SPAN_S)
            yield (f"{n:08x}-0000-4000-8000-{n:012x}", owner, f"s3://library/{owner}/{name}",
                   "r", status, _sha("b", n) if status == "ready" else None,
                   1 if status == "ready" else None, 1, status == "failed", created, created)

    def tags():
        for n in range(0, assets, 3):
            owner = _owner(n, assets, big_share, owners)
            chosen = {TAGS[190 + (n // 6) % 9]} if n % 2 else set()  # common: on every sixth
            chosen |= {TAGS[(n * 31 + k * 17) % 190] for k in range(1 + n % 2)}
            for tag in chosen:
                yield (f"{n:08x}-0000-4000-8000-{n:012x}", tag, owner, START)

    def collections():
        for o in ["archive", *(f"user{k:04}" for k in range(owners))]:
            for c in range(20 if o == "archive" else 3):
                yield (f"c{c:03}-{o}", o, f"Album {c}", START)

    def items():
        for n in range(0, assets, 10):
            owner = _owner(n, assets, big_share, owners)
            album = (n // 10) % (20 if owner == "archive" else 3)
            yield (f"c{album:03}-{owner}", f"{n:08x}-0000-4000-8000-{n:012x}", START)

    return [
        ("recipes", ["id", "name", "definition"], iter([("r", "default", "{}")])),
        ("blobs", ["sha256", "size", "media_type", "store", "media_metadata", "kind", "width",
                   "height", "duration_s", "video_codec", "audio_codec", "captured_at",
                   "camera_make", "camera_model", "title", "created_at"], blobs()),
        ("assets", ["id", "owner", "source_uri", "recipe_id", "status", "sha256",
                    "current_version", "attempt", "retryable", "created_at", "updated_at"],
         assets_rows()),
        ("asset_tags", ["asset_id", "tag", "owner", "created_at"], tags()),
        ("collections", ["id", "owner", "name", "created_at"], collections()),
        ("collection_items", ["collection_id", "asset_id", "added_at"], items()),
    ]


def queries(owner: str) -> dict[str, dict]:
    return {
        "newest 50": {},
        "ready images by capture time": {"kind": "image", "status": "ready", "sort": "captured"},
        "failed": {"status": "failed"},
        "common tag": {"tags": ["holiday"]},
        "rare tag": {"tags": ["tag042"]},
        "two tags": {"tags": ["holiday", "tag042"]},
        "a tag nobody has": {"tags": ["review"]},
        "collection": {"collection": "Album 1"},
        "camera": {"camera": "canon"},
        "video codec, over a minute": {"codec": "h264", "min_duration": 60},
        "one month captured": {"captured_from": "2024-03-01", "captured_to": "2024-04-01",
                               "sort": "captured"},
        "large images": {"min_width": 4000, "kind": "image"},
        "text: one word": {"text": "beach"},
        "text: two words": {"text": "sunset 00012"},
        "text: an audio title": {"text": "song 12"},
        "largest first": {"sort": "size"},
        "by name": {"sort": "name", "order": "asc"},
        "page 20": {"page": 20},
    }


def timed(engine, owner: str, name: str, filters: dict) -> float:
    filters = dict(filters)
    pages = filters.pop("page", 1)
    after = None
    for _ in range(pages - 1):  # untimed: the cursor of the page before
        after = search(engine, SearchQuery(owner=owner, after=after, **filters)).next
    started = time.perf_counter()
    search(engine, SearchQuery(owner=owner, after=after, **filters))
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(url: str, rounds: int, owners: int) -> dict:
    catalog = Catalog(url)
    engine = catalog.engine
    rng = random.Random(11)
    times: dict[str, dict[str, list[float]]] = {"large owner": {}, "small owner": {}}
    for name, filters in queries("archive").items():  # warm caches, untimed
        timed(engine, "archive", name, filters)
    for _ in range(rounds):
        small = f"user{rng.randrange(owners):04}"
        for who, owner in (("large owner", "archive"), ("small owner", small)):
            for name, filters in queries(owner).items():
                times[who].setdefault(name, []).append(timed(engine, owner, name, filters))
    report = {}
    for who, by_query in times.items():
        every = [t for values in by_query.values() for t in values]
        report[who] = {"queries": {name: {"p50_ms": round(statistics.median(v), 1),
                                          "p95_ms": round(percentile(v, 0.95), 1)}
                                   for name, v in by_query.items()},
                       "all_p50_ms": round(statistics.median(every), 1),
                       "all_p95_ms": round(percentile(every, 0.95), 1)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=1_000_000)
    parser.add_argument("--owners", type=int, default=600, help="owners beside 'archive'")
    parser.add_argument("--big-share", type=float, default=0.4,
                        help="the share of assets the 'archive' owner holds (default 0.4)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL URL whose server may create databases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with bench_database(args.pg) as url:
        Catalog(url).upgrade()
        started = time.perf_counter()
        fill_postgresql(url, tables(args.assets, args.big_share, args.owners))
        filled_s = time.perf_counter() - started
        report = {"assets": args.assets, "owners": args.owners + 1,
                  "archive_assets": int(args.assets * args.big_share), "rounds": args.rounds,
                  "fill_s": round(filled_s, 1), **measure(url, args.rounds, args.owners)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['assets']:,} assets, {report['owners']} owners "
          f"({report['archive_assets']:,} for 'archive'); filled by COPY in "
          f"{report['fill_s']} s; {args.rounds} rounds")
    for who in ("large owner", "small owner"):
        print(f"\n{who}: all queries p50 {report[who]['all_p50_ms']} ms, "
              f"p95 {report[who]['all_p95_ms']} ms")
        for name, figures in report[who]["queries"].items():
            print(f"  {name:32} p50 {figures['p50_ms']:7.1f} ms   p95 {figures['p95_ms']:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
