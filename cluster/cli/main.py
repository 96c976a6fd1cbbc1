"""``mediafarm``: ingest, demo and catalog commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from cluster.cli import logs, uploads_command
from cluster.cli.errors import explain
from cluster.cli.options import add_global_options
from cluster.config import load_settings
from cluster.interrupt import summary
from cluster.cli.progress import CommandProgress
from cluster.cli.report import print_hints, print_job_outcome, print_reencode, print_table
from cluster.storage.sources import expand
from pipelines.recipe import load_recipe


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.verbosity)
    try:
        return args.run(args)
    except KeyboardInterrupt as interrupt:  # the cluster is stopped on the way out
        print(f"mediafarm: {summary(interrupt)}", file=sys.stderr)
        return 130
    except Exception as exc:
        failure = explain(exc)
        if failure is None:
            raise
        print(f"mediafarm: {failure[0]}", file=sys.stderr)
        return failure[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return add_global_options(_parser()).parse_args(argv)


def _parser() -> argparse.ArgumentParser:
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
    ingest.set_defaults(run=_ingest)

    demo = commands.add_parser("demo", help="generate a sample set, start clamd, ingest, show results")
    demo.add_argument("--signatures", default="tests/signatures",
                      help="clamd signature database folder for the demo's own clamd")
    demo.set_defaults(run=_demo)

    backfill = commands.add_parser(
        "backfill", help="run a manifest (Parquet, catalog:…, folder or glob) as bulk partitions")
    backfill.add_argument("manifest", help="a .parquet file with source_uri, 'catalog:status=failed', "
                                           "or an fsspec folder or glob")
    backfill.add_argument("--recipe", help="recipe file (YAML or JSON); default: the built-in recipe")
    backfill.add_argument("--scheduler", help="Dask scheduler address")
    backfill.add_argument("--owner", default="default")
    backfill.add_argument("--batch-size", type=_positive, help="assets per partition task "
                          "(default: two partitions per worker thread, at most 200)")
    backfill.add_argument("--max-in-flight", type=int,
                          help="partitions submitted at once (default: two per worker thread)")
    backfill.add_argument("--job-id", help="resume or name the job (default: a new id)")
    backfill.add_argument("--json", action="store_true", help="print the job as JSON on stdout")
    backfill.set_defaults(run=_backfill)

    reencode = commands.add_parser(
        "reencode", help="make what a new recipe changes for the ready assets matching --where")
    reencode.add_argument("--recipe", required=True, help="the new recipe (YAML or JSON)")
    reencode.add_argument("--where", default="", help="e.g. owner=alice (as catalog manifests)")
    reencode.add_argument("--dry-run", action="store_true",
                          help="print counts by media kind and rendition, and an estimate")
    reencode.add_argument("--sample", type=int, default=0, metavar="N",
                          help="first render N assets without keeping them: sizes and qualities")
    reencode.add_argument("--scheduler", help="Dask scheduler address")
    reencode.add_argument("--batch-size", type=_positive, help="as for backfill")
    reencode.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    reencode.set_defaults(run=_reencode)

    status = commands.add_parser("status", help="a job's progress, from the catalog")
    status.add_argument("--job", required=True, metavar="ID")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)

    worker = commands.add_parser(
        "worker", help="start Dask worker processes for Mediafarm, resources declared")
    worker.add_argument("scheduler", metavar="SCHEDULER_ADDRESS")
    worker.add_argument("--nworkers", type=int, default=0,
                        help="worker processes, one thread each (default: one per core)")
    worker.add_argument("--resources", default="",
                        help='extra Dask resources, e.g. "MEMORY=16e9"; GPU=N is added when '
                             "GPUs are found")
    worker.add_argument("--name", help="worker name prefix")
    worker.set_defaults(run=_worker)

    export = commands.add_parser(
        "export", help="write what changed in the catalog since the last export as Parquet")
    export.add_argument("--to", required=True, metavar="URL",
                        help="a folder or fsspec URL (s3://bucket/prefix, r2://bucket/prefix)")
    export.add_argument("--storage-options", type=json.loads, default=None, metavar="JSON",
                        help='fsspec options, as for stores: {"key": ..., "client_kwargs": ...}')
    export.add_argument("--batch-rows", type=int, default=50_000, help="rows read at a time")
    export.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="leave rows younger than this for the next export")
    export.set_defaults(run=_export)

    serve = commands.add_parser("serve", help="run the HTTP submit endpoint (see docs/http.md)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, "
                                           "else a LocalCluster)")
    serve.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores)")
    serve.add_argument("--recipe", help="recipe file for submitted assets; default: the built-in recipe")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    token = commands.add_parser("token", help="bearer tokens of the HTTP endpoint")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="make a token; it is printed once, never stored")
    create.add_argument("--owner", required=True)
    create.add_argument("--scopes", default="submit,read", help="comma-separated: submit, read, admin")
    create.set_defaults(run=_token_create)
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(run=_token_revoke)
    token_commands.add_parser("list", help="tokens' ids, owners and scopes (never the tokens)"
                              ).set_defaults(run=_token_list)

    show = commands.add_parser("show", help="an asset's status and where each rendition is")
    show.add_argument("asset", metavar="ASSET", help="an asset id, or the source's path or URL")
    show.add_argument("--owner", help="the owner, when several ingested the same source")
    show.set_defaults(run=_show)

    get = commands.add_parser("get", help="copy a rendition out of the store to a file")
    get.add_argument("asset", metavar="ASSET", help="an asset id, or the source's path or URL")
    get.add_argument("preset", metavar="PRESET")
    get.add_argument("-o", "--output", metavar="FILE",
                     help="where to write it (default: SOURCE-PRESET.FORMAT here)")
    get.add_argument("--owner", help="the owner, when several ingested the same source")
    get.set_defaults(run=_get)

    clamd = commands.add_parser("clamd", help="run a clamd of your own for the farm, in the "
                                              "background (see docs/deployment.md)")
    clamd_commands = clamd.add_subparsers(required=True, metavar="ACTION")
    clamd_start = clamd_commands.add_parser(
        "start", help="start clamd on the loopback port of MEDIAFARM_CLAMD_URL (default 3310)")
    clamd_start.add_argument("--signatures", metavar="DIR",
                             help="signature database folder (default: /var/lib/clamav)")
    clamd_start.add_argument("--port", type=_positive, help="loopback TCP port (default: "
                                                             "MEDIAFARM_CLAMD_URL's)")
    clamd_start.add_argument("--timeout", type=float, default=300,
                             help="seconds to wait for clamd to load its database")
    clamd_start.set_defaults(run=_clamd_start)
    clamd_commands.add_parser("stop", help="stop the clamd `clamd start` started"
                              ).set_defaults(run=_clamd_stop)
    clamd_commands.add_parser("status", help="whether clamd answers and fails closed"
                              ).set_defaults(run=_clamd_status)

    uploads_command.register(commands)

    db = commands.add_parser("db", help="catalog maintenance")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply catalog migrations").set_defaults(run=_db_upgrade)
    return parser


def _ingest(args: argparse.Namespace) -> int:
    from cluster.farm import Farm

    settings = _settings(args)
    recipe = load_recipe(args.recipe) if args.recipe else None
    requests = expand(args.sources, args.owner)  # bad paths fail before a cluster starts
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        _announce(farm)
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


def _backfill(args: argparse.Namespace) -> int:
    from cluster.farm import Farm

    settings = _settings(args)
    recipe = load_recipe(args.recipe) if args.recipe else None
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        _announce(farm)
        with CommandProgress("backfill") as progress:
            job = farm.backfill(args.manifest, recipe, batch_size=args.batch_size,
                                max_in_flight=args.max_in_flight, job_id=args.job_id,
                                owner=args.owner, progress=progress)
        print_job_outcome(farm.catalog, job, settings.clamd_url, args.json)
    return 0 if not job["counts"].get("failed") else 1


def _reencode(args: argparse.Namespace) -> int:
    from cluster.farm import Farm
    from cluster.manifest import catalog_filter

    settings = _settings(args)
    recipe = load_recipe(args.recipe)  # bad arguments fail before a cluster starts
    catalog_filter(args.where)
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        _announce(farm)
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


def worker_command(args: argparse.Namespace) -> list[str]:
    """The ``dask worker`` command line ``mediafarm worker`` runs."""
    from cluster.worker_plugin import detect_gpus

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
    return command


def _worker(args: argparse.Namespace) -> int:
    # One task per process: libvips and the encoders use one thread each, so the
    # worker's plugin (registered by the Farm) and VIPS_CONCURRENCY agree.
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    command = worker_command(args)
    print("mediafarm: " + " ".join(command), file=sys.stderr)
    os.execv(command[0], command)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _settings(args: argparse.Namespace):
    return load_settings(config_file=args.config)


def _announce(farm) -> None:
    """Once the farm is up: where its data lives and the Dask dashboard, on stderr.

    Not before, so that a command refused for its arguments or its configuration says
    only why, in one line.
    """
    print(f"mediafarm: data folder {farm.settings.data_dir}", file=sys.stderr)
    if farm.dashboard_link:
        print(f"Dask dashboard: {farm.dashboard_link}", file=sys.stderr)


def _open_catalog(settings):
    """The configured catalog, its schema brought up to date (retried like every call)."""
    from catalog import Catalog

    catalog = Catalog(settings.catalog_url, settings.catalog_retry_s)
    catalog.upgrade()
    return catalog


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    job = _open_catalog(settings).job_status(args.job)
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


def _demo(args: argparse.Namespace) -> int:
    from cluster.cli.demo import run_demo

    return run_demo(_settings(args), Path(args.signatures))


def _export(args: argparse.Namespace) -> int:
    from catalog.export import export

    settings = _settings(args)
    report = export(_open_catalog(settings), args.to, args.storage_options,
                    batch_rows=args.batch_rows, settle=args.settle)
    print(json.dumps(report, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cluster.http.app import create_app
    from cluster.farm import Farm
    from cluster.http.service import load_api_config
    from cluster.http.slow_clients import TrustedProxies, guarded_protocol

    settings = _settings(args)
    recipe = load_recipe(args.recipe) if args.recipe else None
    config = load_api_config(settings)
    print(f"mediafarm: data folder {settings.data_dir}", file=sys.stderr)
    app = create_app(lambda: Farm(settings, scheduler_address=args.scheduler, n_workers=args.workers),
                     config, recipe)
    trusted = TrustedProxies(config.trusted_proxies)
    # X-Forwarded-For is believed only from configured proxies (uvicorn's own default trusts
    # 127.0.0.1, which would let any local client pick its rate-limit address).
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=10,
                http=guarded_protocol(config.header_timeout_s,
                                      config.max_unauthenticated_connections, trusted),
                proxy_headers=bool(trusted), forwarded_allow_ips=list(trusted.entries) or None)
    return 0


def _token_catalog(args: argparse.Namespace):
    return _open_catalog(_settings(args)).engine


def _token_create(args: argparse.Namespace) -> int:
    from cluster.http.auth import create_token, parse_scopes

    scopes = parse_scopes(args.scopes)
    token_id, token = create_token(_token_catalog(args), args.owner, scopes)
    print(f"token {token_id} for {args.owner} ({','.join(scopes)}); it is shown only now:",
          file=sys.stderr)
    print(token)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from cluster.http.auth import revoke_token

    if not revoke_token(_token_catalog(args), args.token_id):
        print(f"mediafarm: no live token {args.token_id}", file=sys.stderr)
        return 2
    print(f"token {args.token_id} revoked", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from cluster.http.auth import list_tokens

    for row in list_tokens(_token_catalog(args)):
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "live"
        print(f"{row['id']}  {row['owner']}  {','.join(row['scopes'])}  {state}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from cluster.cli import show

    settings = _settings(args)
    summaries, renditions = show.lookup(_open_catalog(settings), settings, args.asset, args.owner)
    for index, asset in enumerate(summaries):
        if index:
            print()
        show.show(asset, renditions)
    return 0


def _get(args: argparse.Namespace) -> int:
    from cluster.cli import show

    settings = _settings(args)
    summaries, renditions = show.lookup(_open_catalog(settings), settings, args.asset, args.owner)
    if len(summaries) > 1:
        raise ValueError(f"{args.asset} was ingested by several owners: name one with --owner")
    written = show.get(summaries[0], args.preset, renditions, args.output)
    print(f"wrote {written}", file=sys.stderr)
    return 0


def _clamd_start(args: argparse.Namespace) -> int:
    from cluster.cli import clamd_command

    return clamd_command.start(_settings(args), args.signatures, args.port, args.timeout)


def _clamd_stop(args: argparse.Namespace) -> int:
    from cluster.cli import clamd_command

    return clamd_command.stop(_settings(args))


def _clamd_status(args: argparse.Namespace) -> int:
    from cluster.cli import clamd_command

    return clamd_command.status(_settings(args))


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _open_catalog(settings)
    print(f"catalog at {settings.catalog_url} is up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
