"""``mediafarm demo``: the main job on the embedded default, from nothing to a result table."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cluster.cli.options import command_settings
from cluster.cli.local_clamd import start_clamd
from cluster.cli.samples import write_samples


def run_demo(args: argparse.Namespace) -> int:
    from cluster.farm import Farm
    from cluster.cli.progress import CommandProgress
    from cluster.cli.report import print_table

    settings, signatures = command_settings(args), Path(args.signatures)
    data_dir = Path(settings.data_dir)
    samples = write_samples(data_dir / "samples")
    print(f"Generated {len(samples)} sample files in {data_dir / 'samples'}", file=sys.stderr)
    clamd = start_clamd(signatures, data_dir / "demo-clamd")  # `mediafarm clamd` has clamd/
    print(f"Started clamd at {clamd.url} with the signatures in {signatures}", file=sys.stderr)
    try:
        settings = dataclasses.replace(settings, clamd_url=clamd.url)
        with Farm(settings) as farm:
            print(f"Dask dashboard: {farm.dashboard_link}", file=sys.stderr)
            with CommandProgress("demo") as progress:
                results = farm.ingest([str(p) for p in samples], force=True).wait(progress)
    finally:
        clamd.stop()
    print_table(results)
    print(f"\nCatalog: {settings.catalog_url}\nRenditions: {settings.stores['renditions'].url}")
    expected = {"invoice.pdf.exe": "rejected", "truncated.jpg": "rejected"}
    wrong = [r for r in results
             if r["status"] != expected.get(Path(r["source"]).name, "ready")]
    return 1 if wrong else 0
