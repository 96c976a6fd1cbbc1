"""``mediafarm tag``, ``tags`` and ``collection``: an owner's tags and collections.

They need the catalog and no farm. The catalog module is imported when a command runs,
so ``mediafarm --help`` does not pay for it.
"""

from __future__ import annotations

import argparse
import json

from cluster.cli.options import command_settings


def add_parsers(commands) -> None:
    add_search_parser(commands)
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


# SearchFilters' fields (held to them by tests/unit/test_library_names.py), written out so
# that building the parser does not import pydantic and the catalog's models: the values
# are validated by SearchQuery when the command runs.
SEARCH_OPTIONS = {
    "kind": "image, video or audio", "status": "queued, processing, ready, rejected, failed",
    "tags": "a tag the assets carry; repeat for several (all of them)",
    "collection": "a collection's name",
    "text": "words, each in the source's name, a tag, or the title, artist or album",
    "created_from": "ISO date or time", "created_to": "ISO date or time (excluded)",
    "captured_from": "ISO date or time", "captured_to": "ISO date or time (excluded)",
    "min_width": "pixels", "max_width": "pixels", "min_height": "pixels", "max_height": "pixels",
    "min_duration": "seconds", "max_duration": "seconds",
    "camera": "part of the camera's make or model", "codec": "video or audio codec, e.g. h264",
    "deleted": "search deleted assets instead",
    "sort": "created (default), captured, name, size or duration",
    "order": "desc (default) or asc", "limit": "results per page (default 50, at most 500)",
    "after": "the cursor a previous page printed",
}


def add_search_parser(commands) -> None:
    search = commands.add_parser("search", help="find an owner's assets by metadata, tags, "
                                                "collection, dates or text")
    for name, help_ in SEARCH_OPTIONS.items():
        if name == "deleted":
            search.add_argument("--deleted", action="store_true", default=None, help=help_)
        elif name == "tags":
            search.add_argument("--tag", dest="tags", action="append", metavar="TAG", help=help_)
        else:
            search.add_argument(f"--{name.replace('_', '-')}", dest=name, help=help_)
    search.add_argument("--owner", default="default")
    search.add_argument("--json", action="store_true", help="print the page as JSON")
    search.set_defaults(run="library_commands:run_search")


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


def run_search(args: argparse.Namespace) -> int:
    from catalog.search import SearchQuery, search

    given = {name: getattr(args, name) for name in SEARCH_OPTIONS
             if getattr(args, name) is not None}
    page = search(_engine(args), SearchQuery(owner=args.owner, **given))
    if args.json:
        print(json.dumps(page.model_dump(mode="json"), indent=2))
        return 0
    for item in page.items:
        size = "x".join(str(item[k]) for k in ("width", "height") if item[k])
        print("\t".join([item["id"], item["status"], item["kind"] or "-", size or "-",
                         item["source_uri"], ",".join(item["tags"])]))
    if page.next:
        print(f"more: --after {page.next}")
    return 0


def _print_rows(rows: list[dict], as_json: bool, name: str, empty: str) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
    elif not rows:
        print(empty)
    for row in [] if as_json else rows:
        print(f"{row[name]}\t{row['assets']}")
