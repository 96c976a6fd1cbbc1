"""``mediafarm``: ingest, demo and catalog commands."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading

from cluster import worker_start
from cluster.cli import gc_command, library_commands, logs, scrub_command
from cluster.cli.errors import explain
from cluster.cli.options import add_global_options, command_settings, positive
from cluster.interrupt import summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.verbosity)
    try:
        if _starts_own_cluster(args):
            _start_early(command_settings(args).clamd_url)
        return handler(args.run)(args)
    except KeyboardInterrupt as interrupt:  # the cluster is stopped on the way out
        print(f"mediafarm: {summary(interrupt)}", file=sys.stderr)
        return 130
    except Exception as exc:
        failure = explain(exc)
        if failure is None:
            raise
        print(f"mediafarm: {failure[0]}", file=sys.stderr)
        return failure[1]


def _starts_own_cluster(args: argparse.Namespace) -> bool:
    """A command that can join a scheduler and is given none (a config file naming one
    makes what ``_start_early`` began idle, not wrong)."""
    return (hasattr(args, "scheduler") and args.scheduler is None
            and not os.environ.get("DASK_SCHEDULER_ADDRESS"))


def _start_early(clamd_url: str | None) -> None:
    """Begin, beside the command's own imports (about 2 s), the two slowest parts of its
    farm's start: the workers' fork server, which imports the stages, and clamd's
    canaries (``scanner_check``), whose verdict the farm then finds made or waits for."""
    worker_start.start_server()
    threading.Thread(target=_check_clamd, args=(clamd_url,), daemon=True,
                     name="mediafarm-clamd-check").start()


def _check_clamd(url: str | None) -> None:
    try:
        from cluster.worker_plugin import clamd_verdict
        clamd_verdict(url)
    except Exception:  # noqa: BLE001 - the farm checks again and says why
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return add_global_options(build_parser()).parse_args(argv)


def handler(name: str):
    """``"ingest:run_ingest"`` -> ``cluster.cli.ingest.run_ingest``.

    Each command's module is imported only when that command runs, so ``mediafarm --help``
    and ``mediafarm status`` do not pay for Dask, the HTTP app or pyarrow.
    """
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(f"cluster.cli.{module}"), function)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediafarm", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="run files, folders or fsspec URLs through the farm")
    ingest.add_argument("sources", nargs="+", metavar="SRC")
    ingest.add_argument("--recipe", help="recipe file (YAML or JSON); default: the built-in recipe")
    ingest.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, "
                                            "else a LocalCluster)")
    ingest.add_argument("--owner", default="default")
    ingest.add_argument("--force", action="store_true", help="redo assets that are already finished")
    ingest.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    ingest.set_defaults(run="ingest:run_ingest")

    demo = commands.add_parser("demo", help="generate a sample set, start clamd, ingest, show results")
    demo.add_argument("--signatures", default="tests/signatures",
                      help="clamd signature database folder for the demo's own clamd")
    demo.set_defaults(run="demo:run_demo")

    backfill = commands.add_parser(
        "backfill", help="run a manifest (Parquet, catalog:…, folder or glob) as bulk partitions")
    backfill.add_argument("manifest", help="a .parquet file with source_uri, 'catalog:status=failed', "
                                           "or an fsspec folder or glob")
    backfill.add_argument("--recipe", help="recipe file (YAML or JSON); default: the built-in recipe")
    backfill.add_argument("--scheduler", help="Dask scheduler address")
    backfill.add_argument("--owner", default="default")
    backfill.add_argument("--batch-size", type=positive, help="assets per partition task "
                          "(default: two partitions per worker thread, at most 200)")
    backfill.add_argument("--max-in-flight", type=int,
                          help="partitions submitted at once (default: two per worker thread)")
    backfill.add_argument("--job-id", help="resume or name the job (default: a new id)")
    backfill.add_argument("--json", action="store_true", help="print the job as JSON on stdout")
    backfill.set_defaults(run="ingest:run_backfill")

    index = commands.add_parser(
        "index", help="scan, validate, hash, store and record files without rendering anything")
    index.add_argument("sources", nargs="+", metavar="SRC",
                       help="files, folders, globs or fsspec URLs, as for ingest")
    index.add_argument("--scheduler", help="Dask scheduler address")
    index.add_argument("--owner", default="default")
    index.add_argument("--batch-size", type=positive, help="as for backfill")
    index.add_argument("--max-in-flight", type=positive, help="as for backfill")
    index.add_argument("--job-id", help="resume or name the job (default: a new id)")
    index.add_argument("--json", action="store_true", help="print the job as JSON on stdout")
    index.set_defaults(run="ingest:run_index")

    reencode = commands.add_parser(
        "reencode", help="make what a new recipe changes for the ready assets matching --where")
    reencode.add_argument("--recipe", required=True, help="the new recipe (YAML or JSON)")
    reencode.add_argument("--where", default="", help="e.g. owner=alice (as catalog manifests)")
    reencode.add_argument("--dry-run", action="store_true",
                          help="print counts by media kind and rendition, and an estimate")
    reencode.add_argument("--sample", type=int, default=0, metavar="N",
                          help="first render N assets without keeping them: sizes and qualities")
    reencode.add_argument("--scheduler", help="Dask scheduler address")
    reencode.add_argument("--batch-size", type=positive, help="as for backfill")
    reencode.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    reencode.set_defaults(run="ingest:run_reencode")

    rescan = commands.add_parser(
        "rescan", help="scan ready assets' originals again under clamd's newer signatures; "
                       "reject what they now detect (nightly, after freshclam)")
    rescan.add_argument("--signatures", metavar="DIR",
                        help="the folder clamd loads, to derive a version where clamd gives none "
                             "(a custom database)")
    rescan.add_argument("--all", dest="everything", action="store_true",
                        help="re-scan every ready asset, whatever signatures it was scanned with")
    rescan.add_argument("--scheduler", help="Dask scheduler address")
    rescan.add_argument("--batch-size", type=positive, help="originals per partition task "
                                                            "(default 200)")
    rescan.add_argument("--max-in-flight", type=positive, help="as for backfill")
    rescan.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    rescan.set_defaults(run="rescan_command:run_rescan")

    library_commands.add_parsers(commands)
    gc_command.add_parsers(commands)
    scrub_command.add_parsers(commands)

    status = commands.add_parser("status", help="a job's progress, from the catalog")
    status.add_argument("--job", required=True, metavar="ID")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run="catalog_commands:run_status")

    worker = commands.add_parser(
        "worker", help="start Dask worker processes for Mediafarm, resources declared")
    worker.add_argument("scheduler", metavar="SCHEDULER_ADDRESS")
    worker.add_argument("--nworkers", type=int, default=0,
                        help="worker processes, one thread each (default: one per core)")
    worker.add_argument("--resources", default="",
                        help='extra Dask resources, e.g. "MEMORY=16e9"; GPU=N is added when '
                             "GPUs are found")
    worker.add_argument("--name", help="worker name prefix")
    worker.add_argument("--dashboard-address", default="",
                        help="where each worker's Dask HTTP server (dashboard and the metrics "
                             "at /metrics) listens, e.g. :8790; a port taken by another worker "
                             "on the host falls back to a free one (default: Dask's, :0)")
    worker.set_defaults(run="worker:run_worker")

    export = commands.add_parser(
        "export", help="write what changed in the catalog since the last export as Parquet")
    export.add_argument("--to", required=True, metavar="URL",
                        help="a folder or fsspec URL (s3://bucket/prefix, r2://bucket/prefix)")
    export.add_argument("--storage-options", type=json.loads, default=None, metavar="JSON",
                        help='fsspec options, as for stores: {"key": ..., "client_kwargs": ...}')
    export.add_argument("--batch-rows", type=int, default=50_000, help="rows read at a time")
    export.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="leave rows younger than this for the next export")
    export.set_defaults(run="catalog_commands:run_export")

    serve = commands.add_parser("serve", help="run the HTTP submit endpoint (see docs/http.md)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, "
                                           "else a LocalCluster)")
    serve.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores)")
    serve.add_argument("--recipe", help="recipe file for submitted assets; default: the built-in recipe")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run="serve:run_serve")

    token = commands.add_parser("token", help="bearer tokens of the HTTP endpoint")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="make a token; it is printed once, never stored")
    create.add_argument("--owner", required=True)
    create.add_argument("--scopes", default="submit,read", help="comma-separated: submit, read, admin")
    create.set_defaults(run="tokens:run_create")
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(run="tokens:run_revoke")
    token_commands.add_parser("list", help="tokens' ids, owners and scopes (never the tokens)"
                              ).set_defaults(run="tokens:run_list")

    show = commands.add_parser("show", help="an asset's status and where each rendition is")
    show.add_argument("asset", metavar="ASSET", help="an asset id, or the source's path or URL")
    show.add_argument("--owner", help="the owner, when several ingested the same source")
    show.set_defaults(run="show:run_show")

    get = commands.add_parser("get", help="copy a rendition out of the store to a file")
    get.add_argument("asset", metavar="ASSET", help="an asset id, or the source's path or URL")
    get.add_argument("preset", metavar="PRESET")
    get.add_argument("-o", "--output", metavar="FILE",
                     help="where to write it (default: SOURCE-PRESET.FORMAT here)")
    get.add_argument("--owner", help="the owner, when several ingested the same source")
    get.set_defaults(run="show:run_get")

    clamd = commands.add_parser("clamd", help="run a clamd of your own for the farm, in the "
                                              "background (see docs/deployment.md)")
    clamd_commands = clamd.add_subparsers(required=True, metavar="ACTION")
    clamd_start = clamd_commands.add_parser(
        "start", help="start clamd on the loopback port of MEDIAFARM_CLAMD_URL (default 3310)")
    clamd_start.add_argument("--signatures", metavar="DIR",
                             help="signature database folder (default: /var/lib/clamav)")
    clamd_start.add_argument("--port", type=positive, help="loopback TCP port (default: "
                                                             "MEDIAFARM_CLAMD_URL's)")
    clamd_start.add_argument("--timeout", type=float, default=300,
                             help="seconds to wait for clamd to load its database")
    clamd_start.set_defaults(run="clamd_command:run_start")
    clamd_commands.add_parser("stop", help="stop the clamd `clamd start` started"
                              ).set_defaults(run="clamd_command:run_stop")
    clamd_commands.add_parser("status", help="whether clamd answers and fails closed"
                              ).set_defaults(run="clamd_command:run_status")

    uploads = commands.add_parser("uploads", help="resumable and multipart uploads of the HTTP "
                                                  "endpoint")
    uploads.add_subparsers(required=True, metavar="ACTION").add_parser(
        "clean", help="drop expired tus uploads and abort abandoned S3 multipart uploads"
    ).set_defaults(run="uploads_command:run_clean")

    near = commands.add_parser(
        "near-duplicates", help="group each owner's ready pictures whose perceptual hashes are "
                                "within a few bits, record the groups and print them")
    near.add_argument("--owner", help="search this owner only (default: every owner)")
    near.add_argument("--threshold", type=int, metavar="BITS",
                      help="Hamming distance allowed, of 64 bits (default: 8)")
    near.add_argument("--no-search", action="store_true",
                      help="print the groups the last search recorded, without searching")
    near.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    near.set_defaults(run="catalog_commands:run_near_duplicates")

    db = commands.add_parser("db", help="catalog maintenance")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply catalog migrations"
                           ).set_defaults(run="catalog_commands:run_db_upgrade")
    return parser


if __name__ == "__main__":
    sys.exit(main())
