"""``mediafarm tag``, ``tags`` and ``collection``: an owner's tags and collections.

They need the catalog and no farm. The catalog module is imported when a command runs,
so ``mediafarm --help`` does not pay for it.
"""

from __future__ import annotations

import argparse
import json

from cluster.cli.options import command_settings


def add_parsers(commands) -> None:
    tag = commands.add_parser("tag", help="tag assets (or --remove the tags)")
    tag.add_argument("assets", nargs="+", metavar="ASSET", help="asset ids")
    tag.add_argument("-t", "--tag", action="append", required=True, dest="tags", metavar="TAG",
                     help="a tag; repeat for several")
    tag.add_argument("--remove", action="store_true", help="take the tags off instead")
    tag.add_argument("--owner", default="default")
    tag.set_defaults(run="library_commands:run_tag")

    tags = commands.add_parser("tags", help="an owner's tags and how many assets carry each")
    tags.add_argument("--owner", default="default")
    tags.add_argument("--json", action="store_true")
    tags.set_defaults(run="library_commands:run_tags")

    collection = commands.add_parser("collection", help="an owner's collections of assets")
    actions = collection.add_subparsers(required=True, metavar="ACTION")
    for action, help_ in (("add", "put assets in a collection (made if needed)"),
                          ("remove", "take assets out of a collection")):
        parser = actions.add_parser(action, help=help_)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("assets", nargs="+", metavar="ASSET", help="asset ids")
        parser.add_argument("--owner", default="default")
        parser.set_defaults(run=f"library_commands:run_collection_{action}")
    listing = actions.add_parser("list", help="collections and how many assets each holds")
    listing.add_argument("--owner", default="default")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run="library_commands:run_collection_list")
    drop = actions.add_parser("delete", help="delete a collection (its assets stay)")
    drop.add_argument("name", metavar="NAME")
    drop.add_argument("--owner", default="default")
    drop.set_defaults(run="library_commands:run_collection_delete")


def _engine(args: argparse.Namespace):
    from cluster.cli.catalog_commands import open_catalog

    return open_catalog(command_settings(args)).engine


def run_tag(args: argparse.Namespace) -> int:
    from catalog import library

    change = library.remove_tags if args.remove else library.add_tags
    count = change(_engine(args), args.owner, args.assets, args.tags)
    print(f"{'removed' if args.remove else 'added'} {count} tag(s)")
    return 0


def run_tags(args: argparse.Namespace) -> int:
    from catalog import library

    _print_rows(library.tags(_engine(args), args.owner), args.json, "tag", "no tags")
    return 0


def run_collection_add(args: argparse.Namespace) -> int:
    from catalog import library

    count = library.add_to_collection(_engine(args), args.owner, args.name, args.assets)
    print(f"added {count} asset(s) to {args.name!r}")
    return 0


def run_collection_remove(args: argparse.Namespace) -> int:
    from catalog import library

    count = library.remove_from_collection(_engine(args), args.owner, args.name, args.assets)
    print(f"removed {count} asset(s) from {args.name!r}")
    return 0


def run_collection_list(args: argparse.Namespace) -> int:
    from catalog import library

    _print_rows(library.collections(_engine(args), args.owner), args.json, "name",
                "no collections")
    return 0


def run_collection_delete(args: argparse.Namespace) -> int:
    from catalog import library

    library.delete_collection(_engine(args), args.owner, args.name)
    print(f"deleted collection {args.name!r}")
    return 0


def _print_rows(rows: list[dict], as_json: bool, name: str, empty: str) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
    elif not rows:
        print(empty)
    for row in [] if as_json else rows:
        print(f"{row[name]}\t{row['assets']}")
