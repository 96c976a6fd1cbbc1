"""The streamed pass (scan + hash + stage, cluster.source_pass) against its parts and peers.

1. A large video: ``read_pass`` plus promote, on a local originals store, against
   ``sha256sum`` followed by ``clamdscan --stream`` on the same file and clamd; the
   Python heap's peak during the pass (tracemalloc) against the file's size.
2. Small images: the in-memory path (read whole, scan, ``put`` from memory) against
   the streamed one (stage, promote by copy) on local folders and on a moto S3
   server: which is faster, per image, decides ``INLINE_IMAGE_BYTES``.

    .venv/bin/python benchmarks/bench_stream.py [VIDEO]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.cli.local_clamd import start_clamd  # noqa: E402
from cluster.cli.samples import scene  # noqa: E402
from cluster.config import STORE_NAMES, Settings, StoreConfig  # noqa: E402
from cluster.storage.stores import open_stores  # noqa: E402
from pipelines.upload.hashing import sha256_hex  # noqa: E402
from pipelines.upload.scan import ClamdScanner, scan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def settings_for(folder: Path, clamd_url: str, stores: dict | None = None) -> Settings:
    local = {n: StoreConfig((folder / "stores" / n).as_uri()) for n in STORE_NAMES}
    return Settings(str(folder), f"sqlite:///{folder}/c.sqlite", clamd_url, {**local, **(stores or {})})


def video_pass(video: Path, clamd, folder: Path) -> None:
    import cluster.source_pass as source_pass

    settings = settings_for(folder / "video", clamd.url)
    stores = open_stores(settings)
    scanner = ClamdScanner(clamd.url)
    scan(b"warm", scanner)  # the canaries, once
    size = video.stat().st_size
    runs = []
    for _ in range(3):
        tracemalloc.start()
        started = time.perf_counter()
        passed = source_pass.read_pass(str(video), settings, stores, scanner)
        stores["originals"].promote(passed.staged)
        runs.append(time.perf_counter() - started)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        stores["originals"].delete(passed.staged.sha256)
    pair = []
    clamdscan = shutil.which("clamdscan")
    conf = clamd.workdir / "clamd.conf"
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(video)], check=True, capture_output=True)
        if clamdscan:
            subprocess.run([clamdscan, "--stream", "--no-summary", "-c", str(conf), str(video)],
                           check=True, capture_output=True)
        else:
            scan(video.read_bytes(), scanner)
        pair.append(time.perf_counter() - started)
    best, base = min(runs), min(pair)
    print(f"video {size / 2**20:.0f} MiB: streamed pass (scan+hash+stage+promote) {best:.2f} s "
          f"({size / best / 2**20:.0f} MiB/s); sha256sum + "
          f"{'clamdscan --stream' if clamdscan else 'one INSTREAM from memory'} {base:.2f} s; "
          f"ratio {base / best:.2f}; Python heap peak {peak / 2**20:.1f} MiB")


def images(clamd, folder: Path, s3: dict | None, label: str, count: int = 20) -> None:
    import cluster.source_pass as source_pass

    settings = settings_for(folder / label, clamd.url, s3)
    stores = open_stores(settings)
    scanner = ClamdScanner(clamd.url)
    photos = []
    for index in range(count):
        path = folder / f"photo-{index}.jpg"
        scene(3000, 2000, index).jpegsave(str(path), Q=92)
        photos.append(path)
    sizes = [p.stat().st_size for p in photos]
    results = {}
    for inline in (True, False, True, False):  # each twice, the second counts: warm caches
        source_pass.INLINE_IMAGE_BYTES = 16 * 2**20 if inline else 0
        times = []
        for path in photos:
            started = time.perf_counter()
            passed = source_pass.read_pass(str(path), settings, stores, scanner)
            if passed.staged is not None:
                stores["originals"].promote(passed.staged)
                digest = passed.staged.sha256
            else:
                digest = sha256_hex(passed.data)
                stores["originals"].put(digest, passed.data)
            times.append(time.perf_counter() - started)
            stores["originals"].delete(digest)
        results[inline] = statistics.median(times)
    print(f"images on {label} ({statistics.median(sizes) / 2**20:.1f} MiB median, {count}): "
          f"in memory {results[True] * 1000:.1f} ms, streamed {results[False] * 1000:.1f} ms "
          f"per image; streamed/in-memory {results[False] / results[True]:.2f}")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.services.s3 import make_bucket, start_moto

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        folder = Path(scratch)
        clamd = start_clamd(ROOT / "tests" / "signatures", folder / "clamd")
        try:
            if len(sys.argv) > 1:
                video_pass(Path(sys.argv[1]), clamd, folder)
            images(clamd, folder, None, "local folders")
            moto = start_moto()
            try:
                s3 = {}
                for name in STORE_NAMES:
                    bucket = f"bench-{name}"
                    make_bucket(moto.url, bucket)
                    s3[name] = StoreConfig(f"s3://{bucket}/p", {
                        "key": "testing", "secret": "testing", "skip_instance_cache": True,
                        "client_kwargs": {"endpoint_url": moto.url, "region_name": "us-east-1"}})
                images(clamd, folder, s3, "moto S3")
            finally:
                moto.stop()
        finally:
            clamd.stop()


if __name__ == "__main__":
    main()
