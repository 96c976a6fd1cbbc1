"""``mediafarm``: ingest, demo and catalog commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

from cluster.config import load_settings
from cluster.sources import SourceError, expand
from pipelines.recipe import load_recipe


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # Dask narrates every worker start and stop at INFO; users want the results.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (SourceError, FileNotFoundError, ValueError) as exc:
        print(f"mediafarm: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # The cluster or the catalog went away: one line saying so, and that a re-run
        # finishes the job, not a traceback. (Imported here: both pull in heavy modules.)
        from catalog.retry import CatalogUnavailable
        from cluster.bulk import ClusterLost
        if not isinstance(exc, (CatalogUnavailable, ClusterLost)):
            raise
        print(f"mediafarm: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediafarm", description=__doc__)
    parser.add_argument("--config", help="YAML configuration file (default: $MEDIAFARM_CONFIG)")
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
    backfill.add_argument("--batch-size", type=int, default=200, help="assets per partition task")
    backfill.add_argument("--max-in-flight", type=int,
                          help="partitions submitted at once (default: two per worker thread)")
    backfill.add_argument("--job-id", help="resume or name the job (default: a new id)")
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
    reencode.add_argument("--batch-size", type=int, default=200)
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

    db = commands.add_parser("db", help="catalog maintenance")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply catalog migrations").set_defaults(run=_db_upgrade)
    return parser


def _ingest(args: argparse.Namespace) -> int:
    from cluster.farm import Farm

    settings = load_settings(config_file=args.config)
    recipe = load_recipe(args.recipe) if args.recipe else None
    requests = expand(args.sources, args.owner)  # bad paths fail before a cluster starts
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        if farm.dashboard_link:
            print(f"Dask dashboard: {farm.dashboard_link}", file=sys.stderr)
        batch = farm.submit(requests, recipe, force=args.force)
        results = batch.wait(progress=_progress_printer())
    totals = Counter(r["status"] for r in results)
    if args.json:
        json.dump({"assets": results, "totals": dict(totals)}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_table(results)
    return 0 if totals.get("failed", 0) == 0 else 1


def _backfill(args: argparse.Namespace) -> int:
    from cluster.farm import Farm

    settings = load_settings(config_file=args.config)
    recipe = load_recipe(args.recipe) if args.recipe else None
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        if farm.dashboard_link:
            print(f"Dask dashboard: {farm.dashboard_link}", file=sys.stderr)
        job = farm.backfill(args.manifest, recipe, batch_size=args.batch_size,
                            max_in_flight=args.max_in_flight, job_id=args.job_id,
                            owner=args.owner, progress=BulkProgressBar())
    print(json.dumps(job, default=str, indent=2))
    return 0 if not job["counts"].get("failed") else 1


class BulkProgressBar:
    """Counts by status, throughput and ETA on one line of standard error."""

    def __init__(self, out=sys.stderr) -> None:
        self.out, self.started = out, time.monotonic()
        self.interactive = out.isatty()
        self.last_print = 0.0

    def __call__(self, done: int, total: int | None, counts: Counter) -> None:
        now = time.monotonic()
        if not self.interactive and now - self.last_print < 5 and done != total:
            return  # logs get a line every few seconds, terminals every update
        self.last_print = now
        rate = done / max(now - self.started, 1e-9)
        summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        eta = f" ETA {_duration((total - done) / rate)}" if total and rate else ""
        line = f"[{done}/{total or '?'}] {summary} {rate:.1f}/s{eta}"
        end = "" if self.interactive and done != total else "\n"
        print(f"\r{line}" if self.interactive else line, end=end, file=self.out, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02}m" if hours else f"{minutes}m{secs:02}s"


def _reencode(args: argparse.Namespace) -> int:
    from cluster.farm import Farm

    settings = load_settings(config_file=args.config)
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        if farm.dashboard_link:
            print(f"Dask dashboard: {farm.dashboard_link}", file=sys.stderr)
        options = {} if args.dry_run else {"batch_size": args.batch_size,
                                           "progress": BulkProgressBar()}
        report = farm.reencode(load_recipe(args.recipe), where=args.where,
                               dry_run=args.dry_run, sample=args.sample, **options)
    print(json.dumps(report, default=str, indent=2))
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


def _open_catalog(settings):
    """The configured catalog, its schema brought up to date (retried like every call)."""
    from catalog import Catalog

    catalog = Catalog(settings.catalog_url, settings.catalog_retry_s)
    catalog.upgrade()
    return catalog


def _status(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
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


def _progress_printer():
    interactive = sys.stderr.isatty()

    def show(done: int, total: int, counts: Counter) -> None:
        summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        line = f"[{done}/{total}] {summary}"
        if interactive:
            print(f"\r{line}", end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done == total or done % 50 == 0:
            print(line, file=sys.stderr)
    return show


def print_table(results: list[dict], out=sys.stdout) -> None:
    rows = [("SOURCE", "STATUS", "REASON", "RENDITIONS")]
    for r in results:
        renditions = ", ".join(f"{x['preset']} {x['width']}x{x['height']} {x['bytes'] / 1024:.1f}KiB"
                               for x in r["renditions"])
        reason = r["reason"] or ""
        if r["message"] and r["status"] != "ready":
            reason = f"{reason}: {r['message']}"
        rows.append((Path(r["source"]).name, r["status"], reason[:70], renditions))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3],
              file=out)
    totals = Counter(r["status"] for r in results)
    print(f"\n{len(results)} assets: " + ", ".join(f"{v} {k}" for k, v in sorted(totals.items())),
          file=out)


def _demo(args: argparse.Namespace) -> int:
    from cluster.demo import run_demo

    return run_demo(load_settings(config_file=args.config), Path(args.signatures))


def _export(args: argparse.Namespace) -> int:
    from catalog.export import export

    settings = load_settings(config_file=args.config)
    report = export(_open_catalog(settings), args.to, args.storage_options,
                    batch_rows=args.batch_rows, settle=args.settle)
    print(json.dumps(report, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cluster.api import create_app
    from cluster.farm import Farm
    from cluster.service import load_api_config
    from cluster.slow_clients import TrustedProxies, guarded_protocol

    settings = load_settings(config_file=args.config)
    recipe = load_recipe(args.recipe) if args.recipe else None
    config = load_api_config(settings)
    app = create_app(lambda: Farm(settings, scheduler_address=args.scheduler, n_workers=args.workers),
                     config, recipe)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # set again: importing Dask resets it
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
    return _open_catalog(load_settings(config_file=args.config)).engine


def _token_create(args: argparse.Namespace) -> int:
    from cluster.auth import create_token, parse_scopes

    scopes = parse_scopes(args.scopes)
    token_id, token = create_token(_token_catalog(args), args.owner, scopes)
    print(f"token {token_id} for {args.owner} ({','.join(scopes)}); it is shown only now:",
          file=sys.stderr)
    print(token)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from cluster.auth import revoke_token

    if not revoke_token(_token_catalog(args), args.token_id):
        print(f"mediafarm: no live token {args.token_id}", file=sys.stderr)
        return 2
    print(f"token {args.token_id} revoked", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from cluster.auth import list_tokens

    for row in list_tokens(_token_catalog(args)):
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "live"
        print(f"{row['id']}  {row['owner']}  {','.join(row['scopes'])}  {state}")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    _open_catalog(settings)
    print(f"catalog at {settings.catalog_url} is up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
