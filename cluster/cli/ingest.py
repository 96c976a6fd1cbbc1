"""``mediafarm ingest``, ``backfill``, ``index`` and ``reencode``: the commands that run assets
through a farm."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from cluster.cli.options import command_settings
from cluster.cli.progress import CommandProgress
from cluster.cli.report import print_hints, print_job_outcome, print_reencode, print_table
from cluster.farm import Farm
from cluster.manifest import catalog_filter, of_sources
from cluster.storage.sources import expand
from pipelines.recipe import load_recipe


def run_ingest(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    recipe = load_recipe(args.recipe) if args.recipe else None
    requests = expand(args.sources, args.owner)  # bad paths fail before a cluster starts
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        announce(farm)
        batch = farm.submit(requests, recipe, force=args.force)
        with CommandProgress("ingest") as progress:
            results = batch.wait(progress=progress)
    totals = Counter(r["status"] for r in results)
    if args.json:
        json.dump({"assets": results, "totals": dict(totals)}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_table(results)
    print_hints({r["reason"] for r in results}, settings.clamd_url)
    return 0 if totals.get("failed", 0) == 0 else 1


def run_backfill(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe) if args.recipe else None
    return _run_bulk(args, "backfill", lambda farm, **options: farm.backfill(
        args.manifest, recipe, owner=args.owner, **options))


def run_index(args: argparse.Namespace) -> int:
    manifest = of_sources(args.sources, args.owner)  # bad paths fail before a cluster starts
    return _run_bulk(args, "index", lambda farm, **options: farm.index(manifest, **options))


def _run_bulk(args: argparse.Namespace, name: str, run) -> int:
    """Start the farm, ``run`` the bulk job with the command's options and a progress bar,
    print its outcome; exit 1 if any asset failed."""
    settings = command_settings(args)
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        announce(farm)
        with CommandProgress(name) as progress:
            job = run(farm, batch_size=args.batch_size, max_in_flight=args.max_in_flight,
                      job_id=args.job_id, progress=progress)
        print_job_outcome(farm.catalog, job, settings.clamd_url, args.json)
    return 0 if not job["counts"].get("failed") else 1


def run_reencode(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    recipe = load_recipe(args.recipe)  # bad arguments fail before a cluster starts
    catalog_filter(args.where)
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        announce(farm)
        if args.dry_run:
            report = farm.reencode(recipe, where=args.where, dry_run=True, sample=args.sample)
        else:
            with CommandProgress("reencode") as progress:
                report = farm.reencode(recipe, where=args.where, sample=args.sample,
                                       batch_size=args.batch_size, progress=progress)
        if args.json:
            print(json.dumps(report, default=str, indent=2))
        else:
            print_reencode(report)
    return 0


def announce(farm: Farm) -> None:
    """Once the farm is up: where its data lives and the Dask dashboard, on stderr.

    Not before, so that a command refused for its arguments or its configuration says
    only why, in one line.
    """
    print(f"mediafarm: data folder {farm.settings.data_dir}", file=sys.stderr)
    if farm.dashboard_link:
        print(f"Dask dashboard: {farm.dashboard_link}", file=sys.stderr)
