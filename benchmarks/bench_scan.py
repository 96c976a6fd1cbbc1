"""Scan throughput: our ClamdScanner.instream against the stock clamd client (issue 3).

Measures the wall time of one clamd INSTREAM scan, from opening the connection to
clamd's answer, for two clients sending the same bytes to the same clamd:

- ours:  ``pipelines.upload.scan.ClamdScanner(url).instream(data)``
  (256 KiB chunks, ``sendall``);
- stock: ``clamd.ClamdNetworkSocket(host, port).instream(io.BytesIO(data))``
  from the ``clamd`` PyPI package (1 KiB chunks, ``send``).

The script starts its own clamd on a free loopback port, loaded with only the
project's test signatures (``tests/signatures``), so the time is mostly transport
plus clamd's file-type parsing, not signature matching. The corpus is one file of
seeded random bytes (incompressible) per size in ``--sizes`` (MiB), plus one
3000x2000 JPEG made with ``cluster.cli.samples.scene`` (about 3 MiB) so that clamd
parses a real image. The random files are identical from run to run; the JPEG's
grain comes from libvips' gaussnoise, which seeds itself, so its bytes (not its
size) change between runs. Both clients always scan the same bytes.

Each client gets one warm-up scan per file, then ``--repeats`` rounds run the two
interleaved (ours, stock, ours, stock, ...) and check that both answer clean.
Reported: median MB/s (1 MB = 10**6 bytes) per client, and the ratio ours/stock
as the median of the per-round ratios; "overall" treats a round's whole corpus
as one transfer (total bytes / total time). Nothing here asserts on timings.

Run from the repository root (needs clamd installed, as for the tests)::

    .venv/bin/python benchmarks/bench_scan.py                 # 1, 8, 32 MiB; 7 rounds
    .venv/bin/python benchmarks/bench_scan.py --sizes 1,8 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import clamd

from cluster.cli.local_clamd import start_clamd
from cluster.cli.samples import scene
from pipelines.upload.scan import ClamdScanner

SIGNATURES = Path(__file__).resolve().parents[1] / "tests" / "signatures"
MIB = 1024 * 1024
MB = 1_000_000
SEED = 3  # issue 3


@dataclass
class Row:
    """Median figures for one file, or for the whole corpus ("overall")."""

    name: str
    bytes: int
    ours_mb_s: float
    stock_mb_s: float
    ratio: float  # median over rounds of ours MB/s / stock MB/s


def make_corpus(sizes_mib: list[int]) -> dict[str, bytes]:
    """Seeded random files of the given sizes plus one JPEG-like photo."""
    rng = random.Random(SEED)
    corpus = {f"random-{size}MiB.bin": rng.randbytes(size * MIB) for size in sizes_mib}
    corpus["scene-3000x2000.jpg"] = scene(3000, 2000, seed=1).jpegsave_buffer(Q=95)
    return corpus


def timed(scan: Callable[[bytes], bool], data: bytes) -> float:
    """Seconds one scan of ``data`` takes; fails unless clamd answers clean."""
    start = time.perf_counter()
    clean = scan(data)
    elapsed = time.perf_counter() - start
    if not clean:
        raise RuntimeError("clamd did not answer clean for benchmark data")
    return elapsed


def measure(url: str, host: str, port: int, corpus: dict[str, bytes], repeats: int) -> list[Row]:
    """Interleave ours and stock over ``repeats`` rounds; one row per file plus overall."""
    ours_client = ClamdScanner(url)
    stock_client = clamd.ClamdNetworkSocket(host, port)

    def ours(data: bytes) -> bool:
        return ours_client.instream(data) == "stream: OK"

    def stock(data: bytes) -> bool:
        return stock_client.instream(io.BytesIO(data)) == {"stream": ("OK", None)}

    # clamd caches the hash of every clean file it has scanned and answers a repeat
    # without scanning: every timed scan gets bytes clamd has not seen (a counter
    # appended), so the figures are real scans, not cache hits.
    calls = iter(range(10**9))

    def fresh(data: bytes) -> bytes:
        return data + next(calls).to_bytes(8, "big")

    for data in corpus.values():  # warm-up, untimed
        timed(ours, fresh(data))
        timed(stock, fresh(data))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in corpus}
    for _ in range(repeats):
        for name, data in corpus.items():
            times[name].append((timed(ours, fresh(data)), timed(stock, fresh(data))))

    def row(name: str, size: int, pairs: list[tuple[float, float]]) -> Row:
        return Row(name, size,
                   ours_mb_s=statistics.median(size / o for o, _ in pairs) / MB,
                   stock_mb_s=statistics.median(size / s for _, s in pairs) / MB,
                   ratio=statistics.median(s / o for o, s in pairs))

    rows = [row(name, len(corpus[name]), pairs) for name, pairs in times.items()]
    totals = [(sum(times[n][r][0] for n in corpus), sum(times[n][r][1] for n in corpus))
              for r in range(repeats)]
    rows.append(row("overall", sum(map(len, corpus.values())), totals))
    return rows


def print_table(rows: list[Row], info: dict) -> None:
    print(f"clamd {info['clamd']}; {info['cores']} cores; {info['repeats']} rounds; "
          f"median MB/s (10**6 B/s)")
    print(f"{'file':<22}{'MiB':>7}{'ours':>10}{'stock':>10}{'ours/stock':>12}")
    for r in rows:
        print(f"{r.name:<22}{r.bytes / MIB:>7.1f}{r.ours_mb_s:>10.1f}"
              f"{r.stock_mb_s:>10.1f}{r.ratio:>11.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32", help="random file sizes in MiB (default 1,8,32)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.repeats < 1 or any(s < 1 for s in sizes):
        parser.error("--repeats and every size must be at least 1")

    corpus = make_corpus(sizes)
    biggest_mib = max(map(len, corpus.values())) // MIB + 1
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as workdir:
        daemon = start_clamd(SIGNATURES, Path(workdir), stream_max_length=f"{biggest_mib}M")
        try:
            engine, _ = ClamdScanner(daemon.url).version()
            rows = measure(daemon.url, "127.0.0.1", daemon.port, corpus, args.repeats)
        finally:
            daemon.stop()

    info = {"clamd": engine, "cores": os.cpu_count(), "repeats": args.repeats,
            "python": platform.python_version(), "platform": platform.platform()}
    if args.json:
        json.dump({**info, "unit": "MB/s (10**6 bytes)", "files": [asdict(r) for r in rows[:-1]],
                   "overall": asdict(rows[-1])}, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
