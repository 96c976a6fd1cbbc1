"""``mediafarm scrub``: check every stored object (or a sample per run) against its key;
make lost renditions again, report lost originals, remove orphans after a grace period,
clean up expired uploads (``cluster.storage.scrub``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from cluster.cli.gc_command import DEFAULT_GRACE_S
from cluster.cli.options import positive

SCRUBBED = ("originals", "renditions")  # cluster.storage.scrub's; not imported (--help stays quick)


def run_scrub(args: argparse.Namespace) -> int:
    """Exit 0 when every object checked was whole or was mended; 1 when one needs a person
    (an original missing or corrupt, a repair that failed, a partition not checked)."""
    from catalog import scrubs
    from cluster.cli.ingest import announce
    from cluster.cli.options import command_settings
    from cluster.cli.progress import CommandProgress
    from cluster.cli.uploads_command import clean
    from cluster.farm import Farm

    settings = command_settings(args)
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        announce(farm)
        with CommandProgress("scrub") as progress:
            report = farm.scrub(sample=args.sample, limit=args.limit, stores=args.stores,
                                orphan_grace_s=args.orphan_grace, dry_run=args.dry_run,
                                cleanup=lambda: clean(settings, staging=False),
                                batch_size=args.batch_size, max_in_flight=args.max_in_flight,
                                progress=progress)
    if args.parquet:
        scrubs.write_parquet(report["run_id"] or "dry-run", report["findings"], args.parquet)
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print_report(report)
    return 1 if any(f["needs_person"] for f in report["findings"]) else 0


def print_report(report: dict, out: TextIO | None = None) -> None:
    """The counts, then each finding that needs a person, or that the run acted on."""
    out = out or sys.stdout
    counts = ", ".join(f"{n} {what}" for what, n in sorted(report["counts"].items()))
    run = "dry run, nothing changed" if report["dry_run"] else f"run {report['run_id']}"
    print(f"scrub ({run}): {counts or 'nothing to check'}", file=out)
    for found in report["findings"]:
        if found["needs_person"] or found["action"] in ("repaired", "removed"):
            assets = f" ({', '.join(found['assets'])})" if found["assets"] else ""
            print(f"{found['kind']} {found['action']} {found['store']} "
                  f"{(found['sha256'] or '')[:12]}{assets}: {found['message']}", file=out)


def fraction(text: str) -> float:
    """argparse type: a fraction above 0, at most 1."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction above 0 and at most 1")
    return value


def store_names(text: str) -> list[str]:
    """argparse type: comma-separated names of the stores a scrub checks."""
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(SCRUBBED))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"the scrub checks {', '.join(SCRUBBED)}, "
                                         f"not {', '.join(unknown) or 'nothing'}")
    return names


def add_parsers(commands) -> None:
    scrub = commands.add_parser(
        "scrub", help="hash stored objects against their keys; make lost renditions again, "
                      "report lost originals, remove orphans (nightly sampled, weekly whole)")
    scrub.add_argument("--sample", type=fraction, metavar="FRACTION",
                       help="check this fraction of the objects, going on where the last "
                            "sampled run stopped (default: all)")
    scrub.add_argument("--limit", type=positive, metavar="N",
                       help="check at most N objects, going on where the last run stopped")
    scrub.add_argument("--stores", type=store_names, default=list(SCRUBBED), metavar="NAMES",
                       help="which stores, comma-separated (default: originals,renditions)")
    scrub.add_argument("--orphan-grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
                       help="remove an object no row names once a run this long before saw "
                            "it, and staging objects this old; longer than any ingest takes "
                            "(default: 86400)")
    scrub.add_argument("--dry-run", action="store_true",
                       help="check and report only: delete, mend, mark and record nothing")
    scrub.add_argument("--parquet", metavar="URL",
                       help="also write the findings as Parquet here (a path or fsspec URL)")
    scrub.add_argument("--scheduler", help="Dask scheduler address")
    scrub.add_argument("--batch-size", type=positive,
                       help="objects per partition task (default 200)")
    scrub.add_argument("--max-in-flight", type=positive, help="as for backfill")
    scrub.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    scrub.set_defaults(run="scrub_command:run_scrub")
