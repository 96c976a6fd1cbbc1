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


def run_near_duplicates(args: argparse.Namespace) -> int:
    from catalog import near_duplicates

    catalog = open_catalog(command_settings(args))
    threshold = near_duplicates.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not 0 <= threshold < 64:
        print(f"mediafarm: --threshold is a count of bits, 0 to 63, not {threshold}",
              file=sys.stderr)
        return 2
    report = None if args.no_search else near_duplicates.find(catalog, args.owner, threshold)
    owners = [args.owner] if args.owner else near_duplicates.owners(catalog)
    found = {owner: near_duplicates.groups(catalog, owner) for owner in owners}
    if args.json:
        print(json.dumps({"search": report, "groups": found}, indent=2))
        return 0
    if report is not None:
        print(f"searched {report['assets']} assets of {report['owners']} owner(s) at "
              f"{threshold} bits: {report['groups']} groups, {report['grouped']} assets in them",
              file=sys.stderr)
    for owner, groups in found.items():
        for group in groups:
            print(f"{owner}  group {group['group_id']}  ({len(group['assets'])} assets)")
            for asset in group["assets"]:
                print(f"    {asset['phash']}  {asset['asset_id']}  {asset['source_uri']}")
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    open_catalog(settings)
    print(f"catalog at {settings.catalog_url} is up to date", file=sys.stderr)
    return 0
