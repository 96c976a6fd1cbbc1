"""``mediafarm worker``: Dask worker processes for Mediafarm, resources declared."""

from __future__ import annotations

import argparse
import os
import sys

from cluster.worker_plugin import detect_gpus


def worker_command(args: argparse.Namespace) -> list[str]:
    """The ``dask worker`` command line ``mediafarm worker`` runs."""
    resources = [r for r in args.resources.split(",") if r]
    gpus = detect_gpus()
    if gpus and not any(r.startswith("GPU=") for r in resources):
        resources.append(f"GPU={len(gpus)}")
    command = [sys.executable, "-m", "distributed.cli.dask_worker", args.scheduler,
               "--nthreads", "1", "--nworkers", str(args.nworkers or os.cpu_count() or 1)]
    if resources:
        command += ["--resources", ",".join(resources)]
    if args.name:
        command += ["--name", args.name]
    if getattr(args, "dashboard_address", ""):
        command += ["--dashboard-address", args.dashboard_address]
    return command


def run_worker(args: argparse.Namespace) -> int:
    # One task per process: libvips and the encoders use one thread each, so the
    # worker's plugin (registered by the Farm) and VIPS_CONCURRENCY agree.
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    command = worker_command(args)
    print("mediafarm: " + " ".join(command), file=sys.stderr)
    os.execv(command[0], command)
