"""Every shell and Python snippet in the README, run as written on a fresh data folder.

The snippets run in README order in one folder laid out as a user's checkout would be
(`.venv`, `tests/signatures`, a `photos/` folder of JPEGs, a `photo.jpg`), with `.venv/bin`
on PATH as "Using it" says, and with what they name served on loopback: a clamd, a moto
S3 endpoint holding `bucket` and `analytics`, a Dask scheduler, a live `mediafarm serve`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catalog import upgrade
from cluster.config import load_settings
from cluster.cli.samples import scene
from pipelines.recipe import recipe_from_dict
from tests.services.api_server import free_port, settings_env, sqlite_deployment
from tests.services.s3 import DUMMY_KEY, DUMMY_SECRET, REGION, make_bucket, s3_filesystem

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# `make test` is this suite itself, and both targets' set-up step (apt, the .venv) is what
# the suite runs on: test_make_demo_runs_on_a_fresh_data_folder runs `make demo` without it.
NOT_RUN_HERE = ("make demo", "make test")
SCHEDULER_PORT = 8786  # `dask scheduler`'s default, as the README's cluster snippet uses it


def readme_blocks(*languages: str) -> list[tuple[str, str]]:
    """The README's fenced blocks in ``languages``, in order, as (language, text)."""
    text = (ROOT / "README.md").read_text()
    return [(lang, body) for lang, body in FENCE.findall(text) if lang in languages]


def runnable_blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in readme_blocks("sh", "python")
            if not body.lstrip().startswith(NOT_RUN_HERE)]


def is_curl_session(body: str) -> bool:
    return "curl " in body


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As Dask's own listener does; otherwise a just-stopped scheduler's TIME_WAIT blocks it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def run_block(lang: str, body: str, cwd: Path, env: dict[str, str], index: int,
              timeout: float = 600) -> tuple[str, str]:
    """Run one snippet as written; stop whatever it left in the background; (stdout, stderr)."""
    if lang == "python":
        script = cwd / f"readme-snippet-{index}.py"
        script.write_text(body)
        command = [sys.executable, script.name]
    else:
        command = ["bash", "-euo", "pipefail", "-c", body]
    out, err = cwd / f"readme-snippet-{index}.out", cwd / f"readme-snippet-{index}.err"
    # Files, not pipes: a snippet's background processes (`dask scheduler &`) keep pipes open.
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    stdout_text, stderr_text = out.read_text(errors="replace"), err.read_text(errors="replace")
    assert returncode == 0, f"README snippet exited {returncode}:\n{body}\n--- stdout\n" \
                            f"{stdout_text[-3000:]}\n--- stderr\n{stderr_text[-5000:]}"
    return stdout_text, stderr_text


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A folder with what the snippets name: `.venv`, `tests/signatures`, photos."""
    work = tmp_path / "work"
    (work / "tests").mkdir(parents=True)
    (work / ".venv").symlink_to(ROOT / ".venv")
    (work / "tests" / "signatures").symlink_to(ROOT / "tests" / "signatures")
    (work / "photos").mkdir()
    for index, name in enumerate(["beach", "harbour"]):
        scene(640, 480, index).jpegsave(str(work / "photos" / f"{name}.jpg"), Q=85)
    scene(1200, 800, 7).jpegsave(str(work / "photo.jpg"), Q=85)
    return work


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDIAFARM_", "AWS_", "FSSPEC_")) and k != "DASK_SCHEDULER_ADDRESS"}
    env["PATH"] = os.pathsep.join([str(ROOT / ".venv" / "bin"), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["MEDIAFARM_DATA_DIR"] = str(data_dir)
    return env


def test_every_shell_and_python_snippet_is_run_by_a_test():
    blocks = readme_blocks("sh", "python")
    skipped = [body for _, body in blocks if body.lstrip().startswith(NOT_RUN_HERE)]
    assert len(skipped) == 1 and len(blocks) == len(runnable_blocks()) + 1
    assert sum(is_curl_session(body) for _, body in runnable_blocks()) == 1
    # Every language a fence names is one the tests know: runnable, or shown and checked.
    known = {"sh", "python", "yaml", "text", ""}
    assert {lang for lang, _ in FENCE.findall((ROOT / "README.md").read_text())} <= known


def test_the_readme_walkthrough_runs_as_written(checkout, clamd, s3_endpoint):
    if not port_is_free(SCHEDULER_PORT):
        pytest.skip(f"port {SCHEDULER_PORT} is taken; the cluster snippet starts `dask scheduler` on it")
    for bucket in ("bucket", "analytics"):
        make_bucket(s3_endpoint.url, bucket)
    s3_filesystem(s3_endpoint.url).pipe(
        "bucket/uploads/street.jpg", scene(480, 320, 3).jpegsave_buffer(Q=85))
    env = base_env(checkout.parent / "data")
    env.update({"MEDIAFARM_CLAMD_URL": clamd.url, "AWS_ENDPOINT_URL": s3_endpoint.url,
                "AWS_ACCESS_KEY_ID": DUMMY_KEY, "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
                "AWS_DEFAULT_REGION": REGION})
    outputs = []
    for index, (lang, body) in enumerate(runnable_blocks()):
        if is_curl_session(body):
            continue  # test_the_curl_session_runs_against_a_live_server
        block_env = dict(env)
        if "clamd start" in body:  # the snippet starts (and stops) a clamd of its own
            block_env["MEDIAFARM_CLAMD_URL"] = f"tcp://127.0.0.1:{free_port()}"
        if "dask scheduler" in body:
            block_env["DASK_SCHEDULER_ADDRESS"] = f"tcp://127.0.0.1:{SCHEDULER_PORT}"
        outputs.append((body, *run_block(lang, body, checkout, block_env, index)))

    using_it = next(stdout for body, stdout, _ in outputs if "clamd start" in body)
    assert using_it.count('"status": "ready"') == 3, using_it  # photos/ and s3://bucket/uploads/
    assert "thumb" in using_it and (checkout / "thumb.webp").stat().st_size > 0
    first_python = next(stdout for body, stdout, _ in outputs if "farm.ingest" in body)
    assert first_python.count("ready None [") == 2, first_python
    backfills = next(stdout for body, stdout, _ in outputs if "mediafarm backfill" in body)
    assert "2026-11" in backfills and (checkout / "manifest.parquet").exists(), backfills
    second_python = next(stdout for body, stdout, _ in outputs if "farm.backfill" in body)
    assert second_python.startswith("finished"), second_python
    assert s3_filesystem(s3_endpoint.url).find("analytics/mediafarm"), "the export wrote nothing"
    cluster = next(stdout for body, stdout, _ in outputs if "dask scheduler" in body)
    assert "ready" in cluster, cluster


def test_the_curl_session_runs_against_a_live_server(checkout, clamd, dask_client):
    (body,) = [body for _, body in runnable_blocks() if is_curl_session(body)]
    with sqlite_deployment(checkout.parent, clamd.url, dask_client.scheduler.address) as api:
        upgrade(api.settings.catalog_url)
        env = base_env(Path(api.settings.data_dir))
        env.update(settings_env(api.settings))
        env["MEDIAFARM_API_PUBLIC_URL"] = api.url
        stdout, _ = run_block("sh", body, checkout, env, index=0, timeout=300)
    assert "ready null" in stdout and '"preset":"thumb"' in stdout, stdout
    assert "Web/P image" in stdout and "150x150" in stdout, stdout


def test_every_yaml_recipe_block_parses_as_a_recipe():
    recipes = [yaml.safe_load(body) for _, body in readme_blocks("yaml")]
    recipes = [data for data in recipes if "mediafarm" not in data]  # the configuration: below
    assert len(recipes) >= 2
    for data in recipes:
        recipe = recipe_from_dict(data)
        assert recipe.presets or recipe.video


def test_the_yaml_configuration_example_loads(tmp_path):
    (body,) = [body for _, body in readme_blocks("yaml") if body.startswith("mediafarm:")]
    (tmp_path / "mediafarm.yml").write_text(body)
    settings = load_settings({"MEDIAFARM_DATA_DIR": str(tmp_path)}, tmp_path / "mediafarm.yml")
    assert settings.catalog_url.startswith("postgresql://")
    assert settings.stores["renditions"].url == "r2://public-media/renditions"


def test_make_demo_runs_on_a_fresh_data_folder(tmp_path):
    (body,) = [body for _, body in readme_blocks("sh") if body.lstrip().startswith(NOT_RUN_HERE)]
    assert "make demo" in body
    # -o: the set-up step (bootstrap: apt packages, pip into .venv) is taken as done.
    run = subprocess.run(["make", "-o", "setup", "-o", ".venv/.installed", "demo"], cwd=ROOT,
                         env=base_env(tmp_path / "data"), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ready" in run.stdout and "infected" in run.stdout and "corrupt" in run.stdout, run.stdout
    assert (tmp_path / "data" / "samples").is_dir()
