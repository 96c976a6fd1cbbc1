"""Load generator for the HTTP endpoint: N concurrent multipart uploads, then poll to the end.

Runs as its own process, so the figures measure the server, not a shared interpreter:

    python -m tests.load.http_load_client --url http://127.0.0.1:8000 --token mf_... \\
        --count 200 --concurrency 200

Prints one JSON document: the outcomes (upload statuses, each asset's terminal
status, those still not terminal after ``--wait`` seconds), and the figures that
benchmarks/bench_http_load.py reports: requests per second and latency
percentiles of the uploads, and how long until every asset reached a terminal status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import httpx

from cluster.cli.samples import scene

TERMINAL = ("ready", "rejected", "failed")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def run(url: str, token: str, count: int, concurrency: int, width: int, height: int,
              timeout: float, wait: float) -> dict:
    images = [scene(width, height, seed).jpegsave_buffer(Q=80) for seed in range(count)]
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: Counter = Counter()
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout,
                                 trust_env=False) as client:

        async def upload(index: int) -> None:
            async with gate:
                started = time.perf_counter()
                response = await client.post("/v1/assets", files={
                    "file": (f"load-{index}.jpg", images[index], "image/jpeg")})
                latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1
            if response.status_code == 202:
                ids.append(response.json()["id"])

        began = time.perf_counter()
        await asyncio.gather(*(upload(i) for i in range(count)))
        upload_wall = time.perf_counter() - began

        # Poll every asset to a terminal status, a few requests at a time.
        outcome: Counter = Counter()
        pending = set(ids)
        deadline = began + wait
        poll_gate = asyncio.Semaphore(16)

        async def poll(asset_id: str) -> None:
            async with poll_gate:
                try:
                    response = await client.get(f"/v1/assets/{asset_id}")
                except httpx.TransportError:
                    return  # e.g. a keep-alive connection the server closed; poll again
            if response.status_code == 200 and response.json()["status"] in TERMINAL:
                pending.discard(asset_id)
                outcome[response.json()["status"]] += 1

        while pending and time.perf_counter() < deadline:
            await asyncio.gather(*(poll(a) for a in list(pending)))
            if pending:
                await asyncio.sleep(1)
        all_terminal = time.perf_counter() - began
    return {
        "uploads": count, "concurrency": concurrency, "image": f"{width}x{height} JPEG",
        "upload_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "upload_wall_s": round(upload_wall, 3),
        "requests_per_s": round(count / upload_wall, 1),
        "latency_ms": {name: round(1000 * percentile(latencies, q), 1)
                       for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))}
        | {"max": round(1000 * max(latencies), 1)},
        "terminal": dict(outcome), "not_terminal": len(pending),
        "all_terminal_s": round(all_terminal, 2),
        "assets_per_s": round(sum(outcome.values()) / all_terminal, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT of each generated JPEG")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one request")
    parser.add_argument("--wait", type=float, default=1800,
                        help="seconds from the first upload for every asset to end")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    report = asyncio.run(run(args.url, args.token, args.count, args.concurrency, width, height,
                             args.timeout, args.wait))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report["not_terminal"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
