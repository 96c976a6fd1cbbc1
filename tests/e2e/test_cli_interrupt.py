"""Ctrl-C in ``mediafarm ingest``: a summary, a clean stop of the cluster it started, exit 130."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster.cli.samples import scene

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(20):
        scene(1600, 1200, index).jpegsave(str(folder / f"photo-{index:02}.jpg"), Q=90)
    return folder


def _like_a_terminal() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finished(catalog: Path) -> int:
    try:
        with sqlite3.connect(catalog) as db:
            return db.execute("SELECT count(*) FROM assets WHERE status != 'queued'").fetchone()[0]
    except sqlite3.Error:  # not created, or its schema not yet there
        return 0


@pytest.mark.parametrize("whole_group", [False, True], ids=["kill-INT", "terminal-ctrl-c"])
def test_ctrl_c_says_what_finished_stops_its_workers_and_exits_130(photo_folder, tmp_path, clamd,
                                                                   whole_group):
    data_dir = tmp_path / "data"
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(data_dir), "MEDIAFARM_CLAMD_URL": clamd.url}
    # A terminal's Ctrl-C reaches every process of the foreground group, workers included;
    # `kill -INT` only the command itself.
    # As a terminal's shell starts it: SIGINT neither blocked nor ignored, whatever this test
    # process inherited or was left with (said in the failure message if it fails).
    inherited = (signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []),
                 signal.getsignal(signal.SIGINT))
    process = subprocess.Popen([sys.executable, "-m", "cluster.cli.main", "ingest", str(photo_folder)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=whole_group, preexec_fn=_like_a_terminal)
    try:
        deadline = time.monotonic() + 240
        while not _finished(data_dir / "catalog.sqlite"):
            assert process.poll() is None and time.monotonic() < deadline, "no asset finished"
            time.sleep(0.1)
        started = psutil.Process(process.pid).children(recursive=True)
        assert started  # the LocalCluster's worker processes (and what they started)
        if whole_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (
        f"{stderr}\n(this test process: SIGINT blocked, handler = {inherited})")
    assert "Traceback" not in stderr
    summary = [line for line in stderr.splitlines() if line.startswith("mediafarm: interrupted")]
    assert len(summary) == 1, stderr
    assert "of 20 assets" in summary[0] and "again" in summary[0]
    _, alive = psutil.wait_procs(started, timeout=60)
    assert alive == []
