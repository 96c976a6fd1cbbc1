"""The command line as a new user meets it: quiet, versioned, and one line per mistake.

Every expected failure is one line on standard error, starting ``mediafarm:``, naming
what is wrong and what to do; the exit status is 2 for a usage or configuration error
and 1 for a service that cannot be reached (README, "Exit status").
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.e2e.test_cli import env, jpeg_folder  # noqa: F401 - shared fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run(args: list[str], env: dict[str, str], module: str = "cluster.cli.main"
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line(result: subprocess.CompletedProcess, status: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert len(lines) == 1 and lines[0].startswith("mediafarm: "), result.stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_ingest_says_nothing_but_its_results_and_progress(jpeg_folder, env):
    result = _run(["ingest", str(jpeg_folder)], env)
    assert result.returncode == 0, result.stderr
    assert "3 ready" in result.stdout
    for noise in ("INFO", "Traceback", "CommClosedError", "still alive"):
        assert noise not in result.stderr


def test_version_names_the_package_libvips_and_ffmpeg(env):
    result = _run(["--version"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mediafarm ") and "libvips 8." in result.stdout
    assert "FFmpeg " in result.stdout


def test_python_dash_m_mediafarm_is_the_command(env):
    result = _run(["--help"], env, module="mediafarm")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mediafarm")


def test_a_recipe_with_a_yaml_syntax_error_names_the_file_and_line(tmp_path, jpeg_folder, env):
    recipe = tmp_path / "web.yaml"
    recipe.write_text("name: web\npresets:\n  - {name: thumb, width: 150\n  - {name: card\n")
    line = _one_line(_run(["ingest", str(jpeg_folder), "--recipe", str(recipe)], env), 2)
    assert str(recipe) in line and "line 4" in line


def test_a_typo_in_the_config_file_names_the_key_and_the_near_match(tmp_path, jpeg_folder, env):
    config = tmp_path / "farm.yml"
    config.write_text("mediafarm:\n  catalog_ulr: sqlite:///x.sqlite\n")
    line = _one_line(_run(["ingest", str(jpeg_folder), "--config", str(config)], env), 2)
    assert str(config) in line and "catalog_ulr" in line and "catalog_url" in line


@pytest.mark.parametrize("url, named", [
    ("postgresql//farm:s3cret@db/mediafarm", "postgresql//farm:***@db/mediafarm"),
    ("mysql://farm:s3cret@127.0.0.1/mediafarm", "MySQLdb"),
    ("nosuchdb://farm@127.0.0.1/mediafarm", "nosuchdb"),
])
def test_a_catalog_url_that_cannot_work_is_one_line_without_the_password(url, named, jpeg_folder,
                                                                          env):
    line = _one_line(_run(["ingest", str(jpeg_folder)], {**env, "MEDIAFARM_CATALOG_URL": url}), 2)
    assert named in line and "MEDIAFARM_CATALOG_URL" in line and "s3cret" not in line


def test_an_unreachable_scheduler_is_one_line_and_exit_status_1(jpeg_folder, env):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    result = _run(["ingest", str(jpeg_folder), "--scheduler", address],
                  {**env, "MEDIAFARM_SCHEDULER_TIMEOUT_S": "1"})
    line = _one_line(result, 1)
    assert address in line and "MEDIAFARM_SCHEDULER_TIMEOUT_S" in line


def test_a_bad_clamd_url_is_one_line_before_any_worker_starts(jpeg_folder, env):
    url = "http://127.0.0.1:3310"
    line = _one_line(_run(["ingest", str(jpeg_folder)], {**env, "MEDIAFARM_CLAMD_URL": url}), 2)
    assert url in line and "tcp://HOST:PORT" in line
