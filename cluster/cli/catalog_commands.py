"""``mediafarm status``, ``export`` and ``db upgrade``: the commands that need the catalog and no farm."""

from __future__ import annotations

import argparse
import json
import sys

from catalog import Catalog
from cluster.cli.options import command_settings
from cluster.config import Settings


def open_catalog(settings: Settings) -> Catalog:
    """The configured catalog, its schema brought up to date (retried like every call)."""
    catalog = Catalog(settings.catalog_url, settings.catalog_retry_s)
    catalog.upgrade()
    return catalog


def run_status(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    job = open_catalog(settings).job_status(args.job)
    if job is None:
        print(f"mediafarm: no job {args.job} in {settings.catalog_url}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(job, default=str, indent=2))
    else:
        assets = " ".join(f"{k}={v}" for k, v in sorted(job["assets"].items()))
        print(f"job {job['id']} ({job['kind']}): {job['status']}; submitted {job['submitted']}, "
              f"skipped {job['skipped']} already done; assets now: {assets or 'none'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from catalog.export import export  # pyarrow, for this command alone

    report = export(open_catalog(command_settings(args)), args.to, args.storage_options,
                    batch_rows=args.batch_rows, settle=args.settle)
    print(json.dumps(report, indent=2))
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    open_catalog(settings)
    print(f"catalog at {settings.catalog_url} is up to date", file=sys.stderr)
    return 0
