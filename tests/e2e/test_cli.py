"""``mediafarm ingest`` as users run it: a real process, its own or an existing cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import Catalog
from cluster.cli.samples import scene

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _mediafarm(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for index in range(3):
        scene(640, 480, index).jpegsave(str(folder / f"img-{index}.jpg"), Q=85)
    return folder


@pytest.fixture
def env(tmp_path, clamd) -> dict[str, str]:
    return {**os.environ, "MEDIAFARM_DATA_DIR": str(tmp_path / "data"),
            "MEDIAFARM_CLAMD_URL": clamd.url}


def _objects(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "stores").rglob("*") if p.is_file())


def test_json_output_has_one_record_per_file_and_reruns_add_nothing(jpeg_folder, env, dask_client):
    first = _mediafarm(["ingest", str(jpeg_folder), "--json"], env)
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)  # stdout holds the JSON document and nothing else
    assert sorted(Path(a["source"]).name for a in document["assets"]) == [
        "img-0.jpg", "img-1.jpg", "img-2.jpg"]
    assert document["totals"] == {"ready": 3}
    assert set(document["assets"][0]) >= {"id", "source", "status", "reason", "sha256", "renditions"}

    data_dir = Path(env["MEDIAFARM_DATA_DIR"])
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    rows, objects = catalog.row_counts(), _objects(data_dir)
    # The second run joins an existing scheduler instead of starting a LocalCluster.
    second = _mediafarm(["ingest", str(jpeg_folder), "--json",
                         "--scheduler", dask_client.scheduler.address], env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == document
    assert catalog.row_counts() == rows and _objects(data_dir) == objects


def test_missing_source_is_a_clear_error_naming_the_path(tmp_path, env):
    missing = tmp_path / "no-such-folder"
    result = _mediafarm(["ingest", str(missing)], env)
    assert result.returncode == 2
    assert f"{missing}: no such file or directory" in result.stderr
    assert result.stdout == ""


def test_an_unreachable_catalog_is_one_line_and_exit_status_1(env):
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**env, "MEDIAFARM_CATALOG_URL": f"postgresql://nobody@127.0.0.1:{port}/mediafarm",
           "MEDIAFARM_CATALOG_RETRY_S": "1"}
    result = _mediafarm(["status", "--job", "some-job"], env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after the retry's warning
    assert last.startswith("mediafarm: the catalog at") and "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in last and "MEDIAFARM_CATALOG_RETRY_S" in last
