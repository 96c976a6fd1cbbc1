"""Run ``mediafarm`` as users do: a new process, its output captured (so not a terminal)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def mediafarm(args: list[str], env: dict[str, str], timeout: float = 300,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli.main", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def cli_env(data_dir: Path, clamd_url: str) -> dict[str, str]:
    """The environment of a user with their own data folder and clamd, and nothing else set."""
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(data_dir), "MEDIAFARM_CLAMD_URL": clamd_url}
    for name in ("DASK_SCHEDULER_ADDRESS", "MEDIAFARM_CONFIG", "MEDIAFARM_CATALOG_URL"):
        env.pop(name, None)
    return env


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_photos(folder: Path, names: list[str]) -> Path:
    """Small distinct JPEGs named ``names`` in ``folder`` (made if missing)."""
    from cluster.cli.samples import scene

    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        scene(320, 240, index).jpegsave(str(folder / name), Q=85)
    return folder
