"""``mediafarm clamd start|stop|status``: a clamd of one's own for the farm, in the background.

It is the launcher ``make demo`` and the tests use (``cluster.cli.local_clamd``), whose
clamd.conf passes the farm's fail-closed check, on the loopback port of
``MEDIAFARM_CLAMD_URL`` (3310 by default). Its pid and config are recorded under the
data folder, so ``stop`` ends that process and no other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

import psutil

from cluster.cli.local_clamd import start_clamd
from cluster.cli.options import command_settings
from cluster.config import Settings
from cluster.cli.report import scanner_hint
from pipelines.outcome import Failed
from pipelines.upload.scan import DATABASE_SUFFIXES, ClamdScanner
from pipelines.upload.scanner_check import run_check

# Where Debian's and most distributions' freshclam put ClamAV's database.
SYSTEM_DATABASE = Path("/var/lib/clamav")
RECORD = "mediafarm-clamd.json"
LOOPBACK = ("127.0.0.1", "localhost")
# In a source checkout: signatures that detect only the test files (EICAR, a marker).
_PROJECT_SIGNATURES = Path(__file__).resolve().parents[1] / "tests" / "signatures"


def run_start(args: argparse.Namespace) -> int:
    return start(command_settings(args), args.signatures, args.port, args.timeout)


def run_stop(args: argparse.Namespace) -> int:
    return stop(command_settings(args))


def run_status(args: argparse.Namespace) -> int:
    return status(command_settings(args))


def has_database(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix in DATABASE_SUFFIXES for p in folder.iterdir())


def signatures_folder(given: str | None) -> Path:
    """The database clamd loads: ``given``, else the system's; ValueError saying what to do."""
    fetch = ("download ClamAV's with `sudo freshclam` (Debian: apt-get install clamav-freshclam) "
             f"to fill {SYSTEM_DATABASE}, or pass --signatures DIR with a database")
    if _PROJECT_SIGNATURES.is_dir():
        fetch += (f" (the project's test signatures, which detect only test files, are in "
                  f"{_PROJECT_SIGNATURES})")
    if given:
        folder = Path(given).expanduser().absolute()
        if not has_database(folder):
            raise ValueError(f"{folder} holds no ClamAV signature database: {fetch}")
        return folder
    if has_database(SYSTEM_DATABASE):
        return SYSTEM_DATABASE
    raise ValueError(f"no signature database in {SYSTEM_DATABASE}: {fetch}")


def loopback_port(url: str) -> int:
    """The port of a ``tcp://127.0.0.1:PORT`` clamd URL; ValueError for any other URL."""
    parsed = urlparse(url)
    if parsed.scheme != "tcp" or parsed.hostname not in LOOPBACK or not parsed.port:
        raise ValueError(f"MEDIAFARM_CLAMD_URL is {url}; `mediafarm clamd start` runs clamd on "
                         "a loopback TCP port: pass --port, or set "
                         "MEDIAFARM_CLAMD_URL=tcp://127.0.0.1:3310")
    return parsed.port


def start(settings: Settings, signatures: str | None, port: int | None, timeout: float,
          out: TextIO | None = None) -> int:
    out = out or sys.stdout
    folder = signatures_folder(signatures)
    port = port or loopback_port(settings.clamd_url)
    url, workdir = f"tcp://127.0.0.1:{port}", _workdir(settings)
    record = _record(workdir)
    if record and _process(record):
        if _answers(record["url"]):
            print(f"clamd already running at {record['url']} (pid {record['pid']})", file=out)
            return 0
        print(f"mediafarm: clamd (pid {record['pid']}) runs but does not answer at "
              f"{record['url']} yet; see {workdir / 'clamd.log'}", file=sys.stderr)
        return 1
    if _answers(url):
        print(f"mediafarm: something already answers at {url}; it was not started by "
              "`mediafarm clamd start` (`mediafarm clamd status` checks it)", file=sys.stderr)
        return 1
    print(f"starting clamd at {url} with the signatures in {folder}...", file=sys.stderr)
    try:
        daemon = start_clamd(folder, workdir, port=port, timeout=timeout, detach=True)
    except RuntimeError as exc:
        print(f"mediafarm: clamd did not start: {exc}", file=sys.stderr)
        return 1
    (workdir / RECORD).write_text(json.dumps({
        "pid": daemon.process.pid, "url": url, "config": str(daemon.config_path),
        "signatures": str(folder)}, indent=2))
    print(f"clamd started at {url} (pid {daemon.process.pid}); log: {workdir / 'clamd.log'}",
          file=out)
    if url != settings.clamd_url:
        print(f"the farm uses {settings.clamd_url}: set MEDIAFARM_CLAMD_URL={url}", file=out)
    return 0


def stop(settings: Settings, out: TextIO | None = None) -> int:
    out, workdir = out or sys.stdout, _workdir(settings)
    record = _record(workdir)
    if record is None:
        print(f"no clamd started by `mediafarm clamd start` in {workdir}", file=out)
        return 0
    if process := _process(record):
        process.terminate()
        try:
            process.wait(timeout=10)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    (workdir / RECORD).unlink()
    print(f"clamd at {record['url']} (pid {record['pid']}) stopped", file=out)
    return 0


def status(settings: Settings, out: TextIO | None = None) -> int:
    """Whether the farm's clamd answers and fails closed; 0 only when both hold."""
    out, url = out or sys.stdout, settings.clamd_url
    record = _record(_workdir(settings))
    if record:
        state = "running" if _process(record) else "no longer running"
        print(f"started by `mediafarm clamd start`: pid {record['pid']} ({state}), listening at "
              f"{record['url']}, config {record['config']}", file=out)
    version = _answers(url)
    if version is None:
        print(scanner_hint(url), file=out)
        return 1
    try:
        verdict = run_check(ClamdScanner(url))
    except Failed as exc:
        print(f"clamd at {url} answers ({version}) but the fail-closed check failed: "
              f"{exc.message}", file=out)
        return 1
    if not verdict.fails_closed:
        print(f"clamd at {url} answers ({version}) but fails open: {verdict.message()}", file=out)
        return 1
    print(f"clamd at {url} answers ({version}) and fails closed: the farm can use it", file=out)
    return 0


def _workdir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "clamd"


def _record(workdir: Path) -> dict | None:
    path = workdir / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _process(record: dict) -> psutil.Process | None:
    """The recorded clamd if it still runs; a reused pid running something else is not it."""
    try:
        process = psutil.Process(record["pid"])
        if process.status() != psutil.STATUS_ZOMBIE and record["config"] in process.cmdline():
            return process
    except psutil.Error:
        pass
    return None


def _answers(url: str) -> str | None:
    """clamd's version line at ``url``, or None when nothing answers there."""
    try:
        engine, signatures = ClamdScanner(url, timeout=5).version()
    except Failed:
        return None
    return f"{engine}, signatures {signatures}"
