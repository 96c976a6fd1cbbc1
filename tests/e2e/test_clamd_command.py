"""``mediafarm clamd start|status|stop``: a clamd of one's own, that the farm accepts (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from cluster.cli.clamd_command import SYSTEM_DATABASE, has_database
from tests.conftest import SIGNATURES
from tests.services.cli import cli_env, free_port, mediafarm, write_photos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def own_clamd(tmp_path):
    """A user's set-up: MEDIAFARM_CLAMD_URL on a free port; clamd stopped afterwards."""
    url = f"tcp://127.0.0.1:{free_port()}"
    env = cli_env(tmp_path / "data", url)
    yield url, env
    mediafarm(["clamd", "stop"], env, timeout=60)


def test_start_status_ingest_and_stop(tmp_path, own_clamd, dask_client):
    url, env = own_clamd
    down = mediafarm(["clamd", "status"], env, timeout=60)
    assert down.returncode == 1
    assert f"clamd at {url} did not answer: start one with `mediafarm clamd start`" in down.stdout

    started = mediafarm(["clamd", "start", "--signatures", str(SIGNATURES)], env, timeout=120)
    assert started.returncode == 0, started.stderr
    assert url in started.stdout
    record = json.loads((tmp_path / "data" / "clamd" / "mediafarm-clamd.json").read_text())
    assert record["url"] == url and Path(record["config"]).is_file()
    process = psutil.Process(record["pid"])
    assert record["config"] in process.cmdline()  # the command outlived its starter

    again = mediafarm(["clamd", "start", "--signatures", str(SIGNATURES)], env, timeout=120)
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout
    assert json.loads((tmp_path / "data" / "clamd" / "mediafarm-clamd.json").read_text()) == record

    status = mediafarm(["clamd", "status"], env, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"clamd at {url} answers" in status.stdout and "fails closed" in status.stdout
    assert f"pid {record['pid']}" in status.stdout

    photos = write_photos(tmp_path / "photos", ["photo.jpg"])
    ingest = mediafarm(["ingest", str(photos), "--json",
                        "--scheduler", dask_client.scheduler.address], env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["totals"] == {"ready": 1}

    stopped = mediafarm(["clamd", "stop"], env, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "data" / "clamd" / "mediafarm-clamd.json").exists()
    assert mediafarm(["clamd", "status"], env, timeout=60).returncode == 1
    assert mediafarm(["clamd", "stop"], env, timeout=60).returncode == 0  # nothing to stop


def test_a_folder_without_a_database_is_refused_with_what_to_do(tmp_path, own_clamd):
    _, env = own_clamd
    empty = tmp_path / "empty"
    empty.mkdir()
    result = mediafarm(["clamd", "start", "--signatures", str(empty)], env, timeout=60)
    assert result.returncode == 2
    assert f"{empty} holds no ClamAV signature database" in result.stderr
    assert "freshclam" in result.stderr and "--signatures" in result.stderr
    assert not (tmp_path / "data" / "clamd" / "mediafarm-clamd.json").exists()


@pytest.mark.skipif(has_database(SYSTEM_DATABASE), reason="this machine has a system database")
def test_without_signatures_and_without_a_system_database_it_says_what_to_do(own_clamd):
    _, env = own_clamd
    result = mediafarm(["clamd", "start"], env, timeout=60)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert str(SYSTEM_DATABASE) in line and "freshclam" in line and "--signatures DIR" in line


def test_a_port_taken_by_another_program_is_named(tmp_path, own_clamd, clamd):
    # The suite's clamd already answers on this URL, and it was not started by this command.
    env = cli_env(tmp_path / "data", clamd.url)
    result = mediafarm(["clamd", "start", "--signatures", str(SIGNATURES)], env, timeout=60)
    assert result.returncode == 1
    assert f"something already answers at {clamd.url}" in result.stderr
    assert clamd.process.poll() is None
