"""``mediafarm show`` and ``mediafarm get``: where an asset's renditions are (issue 16)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.services.cli import cli_env, mediafarm, write_photos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def ingested(tmp_path, clamd, dask_client) -> tuple[dict, dict]:
    photos = write_photos(tmp_path / "photos", ["beach.jpg"])
    (photos / "notes.txt").write_text("not a picture")
    env = cli_env(tmp_path / "data", clamd.url)
    result = mediafarm(["ingest", str(photos), "--json",
                        "--scheduler", dask_client.scheduler.address], env)
    assert result.returncode == 0, result.stderr
    assets = {Path(a["source"]).name: a for a in json.loads(result.stdout)["assets"]}
    return assets, env


def test_show_by_path_and_by_id_lists_each_rendition_and_where_it_is(tmp_path, ingested):
    assets, env = ingested
    beach = assets["beach.jpg"]
    by_path = mediafarm(["show", str(tmp_path / "photos" / "beach.jpg")], env, timeout=60)
    assert by_path.returncode == 0, by_path.stderr
    by_id = mediafarm(["show", beach["id"]], env, timeout=60)
    assert by_id.stdout == by_path.stdout
    text = by_path.stdout
    assert beach["id"] in text and "ready" in text
    for rendition in beach["renditions"]:
        line = next(line for line in text.splitlines() if line.split()[:1] == [rendition["preset"]])
        assert f"{rendition['width']}x{rendition['height']}" in line and rendition["format"] in line
        location = Path(line.split()[-1])
        assert location.is_file(), line  # a local store shows a path one can open
        assert hashlib.sha256(location.read_bytes()).hexdigest() == rendition["sha256"]
        assert str(tmp_path / "data" / "stores" / "renditions") in str(location)


def test_show_of_a_rejected_asset_gives_its_reason_and_message(tmp_path, ingested):
    assets, env = ingested
    result = mediafarm(["show", str(tmp_path / "photos" / "notes.txt")], env, timeout=60)
    assert result.returncode == 0, result.stderr
    notes = assets["notes.txt"]
    assert notes["status"] == "rejected"
    assert notes["reason"] in result.stdout and notes["message"] in result.stdout


def test_get_copies_a_rendition_out_through_the_store(tmp_path, ingested):
    assets, env = ingested
    beach = assets["beach.jpg"]
    rendition = beach["renditions"][0]
    target = tmp_path / "out" / "thumb.bin"
    target.parent.mkdir()
    result = mediafarm(["get", str(tmp_path / "photos" / "beach.jpg"), rendition["preset"],
                        "-o", str(target)], env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == rendition["sha256"]
    assert len(target.read_bytes()) == rendition["bytes"]

    # Without -o: a name from the source and the preset, with the format's extension.
    default = mediafarm(["get", beach["id"], rendition["preset"]], env, timeout=60,
                        cwd=tmp_path / "out")
    assert default.returncode == 0, default.stderr
    written = tmp_path / "out" / f"beach-{rendition['preset']}.{rendition['format']}"
    assert written.read_bytes() == target.read_bytes(), sorted((tmp_path / "out").iterdir())


@pytest.mark.parametrize(("args", "says"), [
    (["show", "no-such-file.jpg"], "no asset for"),
    (["get", "BEACH", "no-such-preset"], "has no rendition no-such-preset"),
])
def test_unknown_assets_and_presets_are_one_line_errors(tmp_path, ingested, args, says):
    _, env = ingested
    args = [str(tmp_path / "photos" / "beach.jpg") if a == "BEACH" else a for a in args]
    result = mediafarm(args, env, timeout=60)
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr
