"""What long commands print (issue 16): progress, tables, the fix for a missing clamd."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from catalog import Catalog
from tests.services.cli import cli_env, free_port, mediafarm, write_photos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What a log gets when stderr is not a terminal: done/total, counts, rate and ETA.
PROGRESS_LINE = r"{what}: (\d+)/(\d+|\?) \((.*)\), (\d+\.\d) assets/s, ETA (\S+)"
RECIPE_YAML = """\
name: smaller
presets:
  - {name: thumb, width: 48, height: 48, fit: cover}
  - {name: small, width: 120}
"""


@pytest.fixture
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos", [f"photo-{index}.jpg" for index in range(3)])


@pytest.fixture
def env(tmp_path, clamd) -> dict[str, str]:
    return cli_env(tmp_path / "data", clamd.url)


def _progress_lines(stderr: str, what: str) -> list[re.Match]:
    pattern = re.compile(PROGRESS_LINE.format(what=what))
    return [m for m in map(pattern.fullmatch, stderr.splitlines()) if m]


def test_ingest_logs_plain_progress_lines_with_rate_and_eta(photos, env, dask_client):
    result = mediafarm(["ingest", str(photos), "--scheduler", dask_client.scheduler.address], env)
    assert result.returncode == 0, result.stderr
    lines = _progress_lines(result.stderr, "ingest")
    assert lines, result.stderr
    assert lines[0].group(1, 2) == ("0", "3")
    last = lines[-1]
    assert last.group(1, 2, 3) == ("3", "3", "ready=3") and last.group(5) == "0s"
    assert float(last.group(4)) > 0
    assert "\r" not in result.stderr  # no terminal redrawing in a log
    assert f"mediafarm: data folder {env['MEDIAFARM_DATA_DIR']}" in result.stderr.splitlines()


def test_an_unreachable_clamd_names_the_fix_once_and_the_table_keeps_whole_reasons(
        photos, env, dask_client):
    url = f"tcp://127.0.0.1:{free_port()}"
    env = {**env, "MEDIAFARM_CLAMD_URL": url}
    result = mediafarm(["ingest", str(photos), "--scheduler", dask_client.scheduler.address], env)
    assert result.returncode == 1, result.stderr
    hint = (f"clamd at {url} did not answer: start one with `mediafarm clamd start` "
            "or set MEDIAFARM_CLAMD_URL")
    assert (result.stdout + result.stderr).count(hint) == 1, result.stdout + result.stderr

    rows = [line for line in result.stdout.splitlines() if line.startswith("photo-")]
    assert len(rows) == 3 and all(row.split()[1:3] == ["failed", "scanner_unavailable"]
                                  for row in rows), result.stdout
    catalog = Catalog(f"sqlite:///{Path(env['MEDIAFARM_DATA_DIR']) / 'catalog.sqlite'}")
    messages = {r["message"] for r in catalog.results(_ids(catalog))}
    assert messages and all(len(m) > 70 for m in messages)  # longer than the old cut
    for message in messages:  # each distinct failure once, whole, on a line of its own
        assert [line for line in result.stdout.splitlines() if message in line] == [
            f"scanner_unavailable (3 assets): {message}"], result.stdout


def _ids(catalog: Catalog) -> list[str]:
    from sqlalchemy import select

    from catalog.models import Asset

    with catalog.engine.connect() as conn:
        return list(conn.execute(select(Asset.id)).scalars())


def test_backfill_prints_a_table_with_progress_and_json_on_request(photos, env, dask_client):
    scheduler = ["--scheduler", dask_client.scheduler.address]
    table = mediafarm(["backfill", str(photos), *scheduler], env)
    assert table.returncode == 0, table.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(table.stdout)
    fields = dict(line.split(None, 1) for line in table.stdout.splitlines() if line.strip())
    assert fields["status"] == "finished" and fields["kind"] == "backfill"
    assert fields["submitted"].startswith("3") and fields["assets"] == "ready=3"
    last = _progress_lines(table.stderr, "backfill")[-1]
    assert last.group(1, 2, 3) == ("3", "3", "ready=3"), table.stderr

    again = mediafarm(["backfill", str(photos), *scheduler, "--json"], env)
    assert again.returncode == 0, again.stderr
    document = json.loads(again.stdout)
    assert (document["submitted"], document["skipped"]) == (0, 3)


def test_reencode_dry_run_prints_rounded_estimates_with_units(tmp_path, photos, env,
                                                             dask_client):
    scheduler = ["--scheduler", dask_client.scheduler.address]
    assert mediafarm(["ingest", str(photos), *scheduler], env).returncode == 0
    recipe = tmp_path / "smaller.yml"
    recipe.write_text(RECIPE_YAML)

    dry = mediafarm(["reencode", "--recipe", str(recipe), "--dry-run", "--sample", "2",
                     *scheduler], env)
    assert dry.returncode == 0, dry.stderr
    assert "image" in dry.stdout and "thumb=3" in dry.stdout and "small=3" in dry.stdout
    assert re.search(r"\d(\.\d)? (B|KiB|MiB)", dry.stdout), dry.stdout
    assert re.search(r"about \d+(\.\d)?s", dry.stdout), dry.stdout
    assert not re.search(r"\d\.\d{2,}", dry.stdout), dry.stdout  # no raw floats

    as_json = mediafarm(["reencode", "--recipe", str(recipe), "--dry-run", "--sample", "2",
                         "--json", *scheduler], env)
    assert as_json.returncode == 0, as_json.stderr
    estimate = json.loads(as_json.stdout)["sample"]["estimate"]
    assert isinstance(estimate["image_bytes"], int)
    assert estimate["image_seconds"] == round(estimate["image_seconds"], 1)

    run = mediafarm(["reencode", "--recipe", str(recipe), *scheduler], env)
    assert run.returncode == 0, run.stderr
    assert "reencode: 3/3 (ready=3)" in run.stderr
    fields = dict(line.split(None, 1) for line in run.stdout.splitlines() if line.strip())
    assert fields["kind"] == "reencode" and fields["status"] == "finished"


@pytest.mark.parametrize("bad", [["--recipe", "no-such-recipe.yml"],
                                 ["--recipe", "RECIPE", "--where", "colour=red"],
                                 ["--recipe", "RECIPE", "--batch-size", "0"]])
def test_reencode_rejects_bad_arguments_before_starting_a_cluster(tmp_path, env, bad):
    recipe = tmp_path / "smaller.yml"
    recipe.write_text(RECIPE_YAML)
    args = [str(recipe) if arg == "RECIPE" else arg for arg in bad]
    result = mediafarm(["reencode", *args], env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "dashboard" not in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_default_partitions_give_every_worker_thread_work(tmp_path, clamd, dask_client):
    from cluster.farm import Farm
    from tests.conftest import make_settings

    photos = write_photos(tmp_path / "many", [f"p-{index}.jpg" for index in range(8)])
    threads = sum(dask_client.nthreads().values())
    settled: list[int] = []  # progress hears each partition as it ends
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'c.sqlite'}", clamd.url)
    with Farm(settings, client=dask_client) as farm:
        job = farm.backfill(str(photos), progress=lambda done, total, counts: settled.append(done))
    assert job["counts"] == {"ready": 8}
    partitions = len(settled) - 1  # the first call is the start, before any partition
    assert partitions >= 2 * threads, settled
