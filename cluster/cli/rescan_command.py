"""``mediafarm rescan``: scan stored originals again when clamd's signatures change."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from cluster.cli.ingest import announce
from cluster.cli.options import command_settings
from cluster.cli.progress import CommandProgress
from cluster.farm import Farm
from pipelines.outcome import Failed


def run_rescan(args: argparse.Namespace) -> int:
    """Exit 0 when every selected original was scanned; 1 when one could not be (its
    original is missing, or the scanner or a store failed): the report says which."""
    settings = command_settings(args)
    with Farm(settings, scheduler_address=args.scheduler) as farm:
        announce(farm)
        try:
            with CommandProgress("rescan") as progress:
                report = farm.rescan(signatures=args.signatures, everything=args.everything,
                                     batch_size=args.batch_size,
                                     max_in_flight=args.max_in_flight, progress=progress)
        except Failed as exc:  # clamd did not say its version: nothing was scanned
            print(f"mediafarm: {exc.message}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print_report(report)
    return 1 if report["missing"] or report["failed"] else 0


def print_report(report: dict, out: TextIO | None = None) -> None:
    """Counts by outcome, then each infected, missing or failed original and its assets."""
    out = out or sys.stdout
    counts = report["counts"]
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    print(f"signatures {report['signatures_version']}: "
          f"{summary or 'nothing to re-scan: every ready asset is up to date'}", file=out)
    for heading in ("infected", "missing", "failed"):
        for found in report[heading]:
            print(f"{heading} {found['sha256'][:12]} ({', '.join(found['assets'])}): "
                  f"{found['message']}", file=out)
