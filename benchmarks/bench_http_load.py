"""HTTP load: N concurrent multipart uploads to ``mediafarm serve``, then every asset to its end.

Starts what the load test (tests/load/test_http_load.py) uses, on loopback: a
scratch PostgreSQL database, clamd with the test signatures, and ``mediafarm
serve`` with a LocalCluster of ``--workers`` single-threaded workers; then runs
``tests/load/http_load_client.py`` in a process of its own and prints its figures:
upload requests per second, upload latency percentiles, and the time until every
asset reached a terminal status. The test asserts outcomes only; the figures are
measured here and quoted, with this command, in docs/http.md ("Load test")::

    .venv/bin/python benchmarks/bench_http_load.py                   # 200 uploads at once
    .venv/bin/python benchmarks/bench_http_load.py --count 500 --concurrency 100 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from catalog import upgrade  # noqa: E402
from cluster.cli.local_clamd import start_clamd  # noqa: E402
from tests.conftest import SIGNATURES, make_settings  # noqa: E402
from tests.services.api_server import Deployment, start_api_server  # noqa: E402
from tests.services.postgres import scratch_database, server_url  # noqa: E402


def measure(count: int, concurrency: int, size: str, workers: int, wait: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as scratch, \
            server_url() as base, scratch_database(base) as catalog_url:
        root = Path(scratch)
        upgrade(catalog_url)
        clamd = start_clamd(SIGNATURES, root / "clamd")
        try:
            settings = make_settings(root / "data", catalog_url, clamd.url)
            server = start_api_server(settings, root, workers=workers, timeout=300,
                                      extra_env={"MEDIAFARM_API_RATE_LIMIT": "100000",
                                                 "MEDIAFARM_API_RATE_BURST": "100000"})
            try:
                token = Deployment(server, settings).token("bench")["Authorization"]
                command = [sys.executable, "-m", "tests.load.http_load_client",
                           "--url", server.url, "--token", token.removeprefix("Bearer "),
                           "--count", str(count), "--concurrency", str(concurrency),
                           "--size", size, "--wait", str(wait)]
                run = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)},
                                     timeout=wait + 300)
                if run.returncode not in (0, 1):
                    raise RuntimeError(f"the load client failed:\n{run.stderr}")
                return json.loads(run.stdout)
            finally:
                server.stop()
        finally:
            clamd.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="uploads (default 200)")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="uploads in flight at once (default 200)")
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT of each JPEG")
    parser.add_argument("--workers", type=int, default=2,
                        help="the server's LocalCluster workers (default 2)")
    parser.add_argument("--wait", type=float, default=1800,
                        help="seconds for every asset to end before giving up")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    report = measure(args.count, args.concurrency, args.size, args.workers, args.wait)
    report["info"] = {"cores": os.cpu_count(), "load_average": os.getloadavg(),
                      "workers": args.workers, "python": platform.python_version(),
                      "platform": platform.platform()}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0 if report["not_terminal"] == 0 else 1
    latency = report["latency_ms"]
    print(f"{report['uploads']} uploads of {report['image']}, {report['concurrency']} at once; "
          f"{args.workers} workers, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"answered: {report['upload_statuses']}")
    print(f"upload throughput: {report['requests_per_s']} requests/s "
          f"({report['uploads']} in {report['upload_wall_s']} s)")
    print(f"upload latency p50/p90/p99/max: {latency['p50']} / {latency['p90']} / "
          f"{latency['p99']} / {latency['max']} ms")
    print(f"terminal: {report['terminal']}, not terminal: {report['not_terminal']}, "
          f"all terminal after {report['all_terminal_s']} s "
          f"({report['assets_per_s']} assets/s end to end)")
    return 0 if report["not_terminal"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
