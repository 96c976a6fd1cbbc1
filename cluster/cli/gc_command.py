"""``mediafarm gc`` and ``mediafarm owner erase``: delete for real.

``gc`` removes the rows of assets deleted more than ``--grace`` seconds ago, marks the
blobs nothing references any more and deletes those marked more than ``--grace`` seconds
ago, objects first (``catalog.gc``, ``cluster.gc``). Schedule it daily; the grace period
must outlast the longest ingest. ``owner erase`` removes an owner's assets, tokens,
uploads, tags, collections and what only they referenced at once, and records that it
happened.
"""

from __future__ import annotations

import argparse
import getpass
import json

DEFAULT_GRACE_S = 86400.0  # cluster.gc's; the parser does not import it (mediafarm --help stays quick)


def _open(args: argparse.Namespace):
    from catalog.repository import Catalog
    from cluster.config import load_settings
    from cluster.storage.stores import open_stores

    settings = load_settings(config_file=getattr(args, "config", None))
    catalog = Catalog(settings.catalog_url, settings.catalog_retry_s)
    catalog.upgrade()
    return catalog, open_stores(settings)


def run_gc(args: argparse.Namespace) -> int:
    from cluster import gc

    catalog, stores = _open(args)
    report = gc.run_gc(catalog, stores, args.grace, dry_run=args.dry_run)
    print(json.dumps({"dry_run": args.dry_run, "grace_s": args.grace, **report.as_dict()}))
    return 0


def run_owner_erase(args: argparse.Namespace) -> int:
    from cluster import gc

    catalog, stores = _open(args)
    record = gc.erase_owner(catalog, stores, args.owner, f"cli:{getpass.getuser()}", args.grace)
    print(json.dumps(record))
    return 0


def add_parsers(commands) -> None:
    collect = commands.add_parser(
        "gc", help="delete blobs and renditions no asset references any more (daily)")
    collect.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
                         help="keep deleted assets and unreferenced blobs this long, and "
                              "longer than any ingest takes (default: 86400)")
    collect.add_argument("--dry-run", action="store_true",
                         help="count what would go, delete nothing")
    collect.set_defaults(run="gc_command:run_gc")

    owner = commands.add_parser("owner", help="owners of assets")
    erase = owner.add_subparsers(required=True, metavar="ACTION").add_parser(
        "erase", help="remove all of an owner's assets, tokens, uploads and what only they "
                      "referenced; record that it happened")
    erase.add_argument("owner", metavar="OWNER")
    erase.add_argument("--grace", type=float, default=0.0, metavar="SECONDS",
                       help="delete only objects unreferenced this long (default: at once)")
    erase.set_defaults(run="gc_command:run_owner_erase")
