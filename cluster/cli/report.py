"""What commands print for people: result tables, jobs, re-encode plans, hints that name a fix."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

SCANNER_UNAVAILABLE = "scanner_unavailable"


def human_bytes(size: float) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, one decimal past bytes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    """``2.345`` -> ``2.3s``, ``75`` -> ``1m15s``, ``10862`` -> ``3h01m``."""
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02}m"
    return f"{minutes}m{secs:02}s" if minutes else f"{secs}s"


def scanner_hint(clamd_url: str) -> str:
    return (f"clamd at {clamd_url} did not answer: start one with `mediafarm clamd start` "
            "or set MEDIAFARM_CLAMD_URL")


def print_hints(reasons: set[str], clamd_url: str, out: TextIO | None = None) -> None:
    """One line per known cause among ``reasons`` that the user can fix at once."""
    if SCANNER_UNAVAILABLE in reasons:
        print(f"mediafarm: {scanner_hint(clamd_url)}", file=out or sys.stderr)


def print_table(results: list[dict], out: TextIO | None = None) -> None:
    """One row per asset with its reason code; below, each distinct failure's message whole."""
    out = out or sys.stdout
    rows = [("SOURCE", "STATUS", "REASON", "RENDITIONS")]
    for r in results:
        renditions = ", ".join(f"{x['preset']} {x['width']}x{x['height']} "
                               f"{human_bytes(x['bytes'])}" for x in r["renditions"])
        rows.append((Path(r["source"]).name, r["status"], r["reason"] or "", renditions))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3],
              file=out)
    totals = Counter(r["status"] for r in results)
    print(f"\n{len(results)} assets: " + ", ".join(f"{v} {k}" for k, v in sorted(totals.items())),
          file=out)
    print_failures(Counter((r["reason"], r["message"]) for r in results if r["status"] != "ready"),
                   out)
    if totals["ready"]:
        print("\nwhere the renditions are: `mediafarm show SOURCE`; a copy of one: "
              "`mediafarm get SOURCE PRESET -o FILE`", file=out)


def print_failures(failures: Counter, out: TextIO, limit: int = 20) -> None:
    """``reason (N assets): message``, once per distinct (reason, message), the most common
    first; past ``limit`` of them, how many more there are."""
    if failures:
        print("", file=out)
    for (reason, message), count in failures.most_common(limit):
        assets = "1 asset" if count == 1 else f"{count} assets"
        print(f"{reason or 'unknown'} ({assets}): {message or ''}".rstrip(), file=out)
    if len(failures) > limit:
        print(f"... and {len(failures) - limit} more distinct failures", file=out)


def print_job(job: dict, out: TextIO | None = None) -> None:
    """A backfill's or re-encode's job as ``field value`` lines."""
    out = out or sys.stdout
    fields = {"job": job["id"], "kind": job["kind"], "status": job["status"],
              "manifest": job["manifest"],
              "submitted": f"{job['submitted']} (skipped {job['skipped']} already done)",
              "outcomes": _counts(job.get("counts") or {}),
              "assets": _counts(job["assets"])}
    width = max(map(len, fields))
    for name, value in fields.items():
        print(f"{name.ljust(width)}  {value}", file=out)


def print_job_outcome(catalog, job: dict, clamd_url: str, as_json: bool) -> None:
    """The job as JSON or as lines with its failures; on stderr, hints that name a fix."""
    failures = failures_of_job(catalog, job["id"])
    if as_json:
        print(json.dumps(job, default=str, indent=2))
    else:
        print_job(job)
        print_failures(failures, sys.stdout)
    print_hints({reason for reason, _ in failures}, clamd_url)


def print_reencode(report: dict, out: TextIO | None = None) -> None:
    """The plan (renditions to make, by media kind), the sample's sizes, and the estimate."""
    out = out or sys.stdout
    print(f"recipe {report['recipe_id']}", file=out)
    plan = report["plan"]
    for kind, assets in sorted(plan["assets"].items()):
        print(f"{kind:<6} {assets} assets; to make: {_counts(plan['renditions'].get(kind, {}))}",
              file=out)
    if not plan["assets"]:
        print("nothing to make: every matching asset is up to date", file=out)
    if sample := report.get("sample"):
        print(f"\nsample of {sample['sampled']} images, per preset:", file=out)
        for preset, found in sorted(sample["presets"].items()):
            sizes = found["bytes"]
            quality = found["quality"]
            print(f"  {preset}: {human_bytes(sizes['p50'])} median, {human_bytes(sizes['p90'])} "
                  f"p90, {human_bytes(sizes['max'])} max"
                  + (f"; quality {_span(quality['min'], quality['max'])}" if quality else "")
                  + f"; {_counts(found['formats'])}", file=out)
        estimate = sample["estimate"]
        print(f"estimate for the images: about {human_seconds(estimate['image_seconds'])} on "
              f"{estimate['worker_threads']} worker threads, "
              f"{human_bytes(estimate['image_bytes'])} of new renditions", file=out)
    if job := report.get("job"):
        print("", file=out)
        print_job(job, out)


def failures_of_job(catalog, job_id: str) -> Counter:
    """How many assets the job left failed or rejected, by (reason, message)."""
    from sqlalchemy import func, select

    from catalog.models import Asset

    with catalog.engine.connect() as conn:
        rows = conn.execute(select(Asset.reason, Asset.message, func.count())
                            .where(Asset.job_id == job_id,
                                   Asset.status.in_(("failed", "rejected")))
                            .group_by(Asset.reason, Asset.message))
        return Counter({(reason, message): count for reason, message, count in rows})


def _span(low: float, high: float) -> str:
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def _counts(counts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
