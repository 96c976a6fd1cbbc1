"""Start a throwaway clamd on a loopback TCP port for demos and tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.config import SCAN_MAX_BYTES

INSTALL_HINT = "install Debian's clamav-daemon (`apt-get install clamav-daemon`) or conda-forge's clamav"

# Debian installs clamd in /usr/sbin, which is often missing from a non-root PATH.
_FALLBACK_CLAMD = Path("/usr/sbin/clamd")

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
# The farm's default scanner limit (MEDIAFARM_SCAN_MAX_BYTES): 2047M, under ClamAV's 2 GiB - 1.
DEFAULT_STREAM_MAX_LENGTH = f"{SCAN_MAX_BYTES // _SIZE_UNITS['M']}M"


@dataclass
class LocalClamd:
    """A running clamd child process listening on ``url``."""

    url: str
    process: subprocess.Popen
    workdir: Path
    timeout: float = 60

    @property
    def port(self) -> int:
        """The TCP port parsed from ``url``."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def config_path(self) -> Path:
        """The clamd.conf this daemon was started with."""
        return self.workdir / "clamd.conf"

    def stop(self) -> None:
        """Terminate clamd, escalating to kill; safe to call twice."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def start_again(self) -> None:
        """Restart clamd on the same port with the same config after ``stop()``."""
        self.stop()
        # A killed clamd leaves its pid file behind; drop it so the file names the new process.
        (self.workdir / "clamd.pid").unlink(missing_ok=True)
        self.process = _launch(self.config_path, self.workdir)
        _wait_until_ready(self.process, self.port, self.workdir, self.timeout)


def find_clamd() -> str | None:
    """Return the clamd executable path, or None when it is not installed."""
    found = shutil.which("clamd")
    if found:
        return found
    if _FALLBACK_CLAMD.is_file():
        return str(_FALLBACK_CLAMD)
    return None


def start_clamd(
    database_dir: Path,
    workdir: Path,
    port: int | None = None,
    stream_max_length: str = DEFAULT_STREAM_MAX_LENGTH,
    timeout: float = 60,
    max_file_size: str | None = None,
    overrides: Mapping[str, str] | None = None,
    detach: bool = False,
) -> LocalClamd:
    """Write a clamd.conf in ``workdir``, start clamd and wait until it answers PING.

    ``overrides`` replaces or adds clamd.conf settings, e.g. to start a clamd set up
    like a distribution's packaged one. ``detach`` starts clamd in a session of its own,
    so it outlives the caller and a Ctrl-C at the caller's terminal.
    """
    if find_clamd() is None:
        raise RuntimeError(INSTALL_HINT)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    conf = workdir / "clamd.conf"
    conf.write_text(_config_text(Path(database_dir).resolve(), workdir, port, stream_max_length,
                                 max_file_size, overrides))
    process = _launch(conf, workdir, detach)
    _wait_until_ready(process, port, workdir, timeout)
    return LocalClamd(url=f"tcp://127.0.0.1:{port}", process=process, workdir=workdir, timeout=timeout)


def _config_text(database_dir: Path, workdir: Path, port: int, stream_max_length: str,
                 max_file_size: str | None = None,
                 overrides: Mapping[str, str] | None = None) -> str:
    """Render a minimal clamd.conf; no User line so clamd keeps the caller's uid."""
    # Past MaxFileSize/MaxScanSize clamd stops scanning; by default they cover a full stream
    # twice over (what clamd unpacks from a file counts too), and a smaller max_file_size
    # exercises the AlertExceedsMax heuristic. MaxFileSize must be at least MaxScanSize, or
    # an archive member past MaxFileSize is cut short without an alert (scanner_check).
    limit = max_file_size or max(2 * _parse_size(stream_max_length), _parse_size("100M"))
    settings = {
        "DatabaseDirectory": str(database_dir),
        "TCPSocket": str(port),
        "TCPAddr": "127.0.0.1",
        "Foreground": "yes",
        "LogFile": str(workdir / "clamd.log"),
        "LogTime": "yes",
        "PidFile": str(workdir / "clamd.pid"),
        "TemporaryDirectory": str(workdir),
        "StreamMaxLength": stream_max_length,
        "MaxFileSize": str(limit),
        "MaxScanSize": str(limit),
        # Report files over the limits instead of calling them clean.
        "AlertExceedsMax": "yes",
        # ClamAV decodes every image to match image fuzzy-hash signatures (90-460 ms a
        # photograph); the project's database has none, so the work would be wasted.
        # A production clamd with such signatures keeps its own setting.
        "ScanImageFuzzyHash": "no",
        **(overrides or {}),
    }
    return "".join(f"{name} {value}\n" for name, value in settings.items())


def _parse_size(text: str) -> int:
    """Convert a clamd size such as '100M' to bytes."""
    text = text.strip().upper()
    unit = text[-1] if text and text[-1] in "KMG" else ""
    return int(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit]


def _launch(conf: Path, workdir: Path, detach: bool = False) -> subprocess.Popen:
    """Start clamd in the foreground with its output appended to workdir/clamd.out."""
    executable = find_clamd()
    if executable is None:
        raise RuntimeError(INSTALL_HINT)
    with open(workdir / "clamd.out", "ab") as out:
        # The child keeps its own copy of the descriptor, so closing ours is fine.
        return subprocess.Popen(
            [executable, "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=detach,
        )


def _free_port() -> int:
    """Ask the kernel for an unused loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int) -> bool:
    """Return True when clamd on ``port`` answers zPING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"zPING\0")
            return sock.recv(16).rstrip(b"\0\n") == b"PONG"
    except OSError:
        return False


def _wait_until_ready(process: subprocess.Popen, port: int, workdir: Path, timeout: float) -> None:
    """Poll PING every 0.1 s; on exit or timeout stop clamd and raise with the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clamd exited with code {process.returncode}:\n{_log_tail(workdir)}")
        if _ping(port):
            return
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"clamd did not answer PING on port {port} within {timeout}s:\n{_log_tail(workdir)}")


def _log_tail(workdir: Path, lines: int = 20) -> str:
    """Return the last lines of clamd's log and captured output."""
    chunks = []
    for name in ("clamd.log", "clamd.out"):
        path = workdir / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {name} ---\n" + "\n".join(tail))
    return "\n".join(chunks) or "(no clamd log written)"
