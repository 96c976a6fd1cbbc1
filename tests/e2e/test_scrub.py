"""The scrub end to end: objects hashed on the suite's Dask cluster against their keys,
lost renditions made again from their originals (local folders and S3), lost originals
reported and marked, orphans listed then removed, uploads cleaned up, the run recorded in
PostgreSQL and as Parquet; the command in its own process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from catalog import scrubs
from catalog.models import Asset, ScrubFinding, ScrubRun, ScrubSighting, StageRun, TusUpload
from cluster.cli.samples import scene
from cluster.config import StoreConfig
from cluster.farm import Farm
from cluster.http import tus_store
from pipelines.recipe import Preset, Recipe, VideoPreset
from tests.conftest import make_settings, s3_store
from tests.services.api_server import settings_env
from tests.services.cli import free_port, mediafarm

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = Recipe("scrub", (Preset("thumb", 64, 64, fit="cover"), Preset("small", 160)))
BAD = {"rendition_missing", "rendition_corrupt", "original_missing", "original_corrupt",
       "orphan", "check_failed"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ingest(farm: Farm, folder: Path, count: int) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        scene(320, 240, 60 + index).jpegsave(str(folder / f"photo-{index}.jpg"), Q=80)
    results = sorted(farm.ingest([str(folder)], RECIPE).wait(), key=lambda r: r["source"])
    assert [r["status"] for r in results] == ["ready"] * count, results
    return results


def _rendition(result: dict, preset: str) -> str:
    return next(r["sha256"] for r in result["renditions"] if r["preset"] == preset)


def _whole(farm: Farm, asset_ids: list[str]) -> None:
    """Every asset ready, and each of its objects there with bytes that hash to its key."""
    for result in farm.results(asset_ids):
        assert result["status"] == "ready", result
        assert {r["preset"] for r in result["renditions"]} == {"thumb", "small"}
        digests = [result["sha256"]] + [r["sha256"] for r in result["renditions"]]
        for name, digest in zip(["originals"] + ["renditions"] * 2, digests):
            assert sha(farm.stores[name].get(digest)) == digest


def _problems(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["kind"] in BAD]


@pytest.fixture(params=["local", "s3"])
def farm(request, tmp_path, pg_url, clamd, dask_client):
    stores = {}
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        stores = {name: s3_store(endpoint, name) for name in ("originals", "renditions",
                                                              "quarantine")}
    settings = make_settings(tmp_path / "data", pg_url, clamd.url, stores)
    with Farm(settings, client=dask_client) as farm:
        yield farm


def test_a_deleted_and_a_corrupted_rendition_are_made_again(farm, tmp_path):
    first, second, third = _ingest(farm, tmp_path / "photos", 3)
    renditions = farm.stores["renditions"]
    deleted, corrupted = _rendition(first, "thumb"), _rendition(second, "small")
    assert renditions.delete(deleted)
    renditions.fs.pipe_file(renditions.key(corrupted), b"not the bytes it was")

    ids = [first["id"], second["id"], third["id"]]
    fingerprints = {a: row["source_fingerprint"] for a, row in farm.catalog.assets(ids).items()}

    report = farm.scrub()
    problems = {f["kind"]: f for f in _problems(report)}
    assert sorted(problems) == ["rendition_corrupt", "rendition_missing"], report
    assert problems["rendition_missing"]["sha256"] == deleted
    assert problems["rendition_missing"]["assets"] == [first["id"]]
    assert problems["rendition_corrupt"]["sha256"] == corrupted
    assert {f["action"] for f in problems.values()} == {"repaired"}, report
    assert report["counts"]["repaired"] == 2 and report["counts"]["checked"] == 9
    _whole(farm, ids)
    # Made again from the stored originals, the sources still known unchanged.
    assert {a: row["source_fingerprint"] for a, row in farm.catalog.assets(ids).items()} \
        == fingerprints and all(fingerprints.values())

    with farm.catalog.engine.connect() as conn:
        run = conn.execute(select(ScrubRun).where(ScrubRun.id == report["run_id"])).one()
        rows = conn.execute(select(ScrubFinding.kind, ScrubFinding.action, ScrubFinding.asset_id)
                            .where(ScrubFinding.run_id == run.id)).all()
    assert run.status == "finished" and run.counts["repaired"] == 2
    assert sorted(rows) == [("rendition_corrupt", "repaired", second["id"]),
                            ("rendition_missing", "repaired", first["id"])]

    again = farm.scrub()
    assert _problems(again) == [] and again["counts"]["ok"] == 9, again


def test_a_lost_original_is_reported_and_marked_through_the_command(tmp_path, pg_url, clamd,
                                                                   dask_client):
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        gone, spoilt, kept = _ingest(farm, tmp_path / "photos", 3)
        originals = farm.stores["originals"]
        assert originals.delete(gone["sha256"])
        originals.fs.pipe_file(originals.key(spoilt["sha256"]), b"bit rot")
        # As a re-scan leaves an infected original: in quarantine, where it should be.
        farm.stores["quarantine"].put(kept["sha256"], originals.get(kept["sha256"]))
        originals.delete(kept["sha256"])
        # An upload its client gave up on, past its expiry: the scrub's clean-up drops it.
        tus_store.create(farm.catalog.engine, farm.stores["buffer"], "lee", 100, {}, -60)

    env = {**os.environ, **settings_env(settings)}
    parquet = tmp_path / "findings.parquet"
    ran = mediafarm(["scrub", "--scheduler", dask_client.scheduler.address, "--json",
                     "--parquet", str(parquet)], env, timeout=240)
    assert ran.returncode == 1, ran.stderr
    report = json.loads(ran.stdout)
    problems = {f["kind"]: f for f in _problems(report)}
    assert sorted(problems) == ["original_corrupt", "original_missing"], report
    assert problems["original_missing"]["assets"] == [gone["id"]]
    assert problems["original_corrupt"]["assets"] == [spoilt["id"]]
    assert {f["action"] for f in problems.values()} == {"marked"}
    assert all(f["needs_person"] for f in problems.values())
    assert report["counts"]["uploads_tus_expired"] == 1 and report["counts"]["quarantined"] == 1

    table = pq.read_table(parquet).to_pylist()
    assert sorted((r["kind"], r["asset_ids"][0], r["run_id"]) for r in table) == sorted(
        [("original_missing", gone["id"], report["run_id"]),
         ("original_corrupt", spoilt["id"], report["run_id"])])
    with farm.catalog.engine.connect() as conn:
        marks = {r.asset_id: (r.status, r.reason) for r in conn.execute(
            select(StageRun).where(StageRun.stage == scrubs.STAGE))}
        statuses = dict(conn.execute(select(Asset.id, Asset.status)).all())
        tus = conn.execute(select(TusUpload.status)).scalar_one()
    assert marks == {gone["id"]: ("failed", "original_missing"),
                     spoilt["id"]: ("failed", "original_corrupt")}
    # Still ready: the renditions are whole and served; the mark says what is wrong.
    assert set(statuses.values()) == {"ready"} and tus == "expired"

    shown = mediafarm(["show", gone["id"]], env, timeout=120)
    assert "original_missing" in shown.stdout, shown.stdout + shown.stderr

    # The original restored (from a backup): the next scrub clears its asset's mark.
    farm.stores["originals"].put_file(gone["sha256"], str(tmp_path / "photos" / "photo-0.jpg"))
    again = mediafarm(["scrub", "--scheduler", dask_client.scheduler.address], env, timeout=240)
    assert again.returncode == 1, again.stderr
    assert again.stdout.startswith("scrub (run ") and "1 original_corrupt" in again.stdout
    assert f"original_corrupt marked originals {spoilt['sha256'][:12]}" in again.stdout
    assert "original_missing" not in again.stdout
    with farm.catalog.engine.connect() as conn:
        assert conn.execute(select(StageRun.status).where(
            StageRun.stage == scrubs.STAGE, StageRun.asset_id == gone["id"])).scalar() == "ok"


def test_orphans_are_listed_then_removed_and_a_dry_run_changes_nothing(tmp_path, pg_url, clamd,
                                                                       dask_client):
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        [photo] = _ingest(farm, tmp_path / "photos", 1)
        renditions, originals = farm.stores["renditions"], farm.stores["originals"]
        orphan = b"bytes no catalog row names"
        renditions.put(sha(orphan), orphan)
        stray = originals.writer()  # what a worker lost mid-stream left in staging
        stray.write(b"half an upload")
        stray.commit()
        before = {name: farm.stores[name].digests() for name in ("originals", "renditions")}

        dry = farm.scrub(dry_run=True, orphan_grace_s=0)
        assert [(f["kind"], f["action"], f["sha256"]) for f in _problems(dry)] == [
            ("orphan", "none", sha(orphan))]
        first = farm.scrub(orphan_grace_s=0)
        assert [(f["kind"], f["action"]) for f in _problems(first)] == [("orphan", "listed")]
        assert first["counts"]["staging_removed"] == 1 and originals.staging_keys() == []
        assert renditions.exists(sha(orphan))  # listed on a first sighting, never removed

        second = farm.scrub(orphan_grace_s=0)
        assert [(f["kind"], f["action"]) for f in _problems(second)] == [("orphan", "removed")]
        assert not renditions.exists(sha(orphan))
        before["renditions"].remove(sha(orphan))
        assert {name: farm.stores[name].digests() for name in before} == before
        _whole(farm, [photo["id"]])
        assert _problems(farm.scrub(orphan_grace_s=0)) == []

    with farm.catalog.engine.connect() as conn:
        runs = conn.execute(select(ScrubRun.id)).scalars().all()
        sightings = conn.execute(select(func.count()).select_from(ScrubSighting)).scalar_one()
    assert dry["run_id"] is None and len(runs) == 3 and sightings == 0


def test_a_sampled_run_checks_its_fraction_and_the_next_goes_on(tmp_path, pg_url, clamd,
                                                                dask_client):
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        results = _ingest(farm, tmp_path / "photos", 4)
        renditions = farm.stores["renditions"]
        everything = [r["sha256"] for r in results] + [s["sha256"] for r in results
                                                       for s in r["renditions"]]
        broken = _rendition(results[0], "thumb")
        renditions.delete(broken)
        dry = farm.scrub(sample=0.5, dry_run=True)
        assert renditions.exists(broken) is False  # a dry run mends nothing
        assert farm.scrub(sample=0.5, dry_run=True)["options"]["window"] == dry["options"]["window"]

        halves = [farm.scrub(sample=0.5) for _ in range(2)]
        fives = [farm.scrub(limit=5) for _ in range(2)]
    assert [f["counts"]["checked"] for f in fives] == [5, 5]
    assert fives[0]["options"]["window"]["start"] == halves[1]["cursor"]
    assert fives[1]["options"]["window"]["start"] == fives[0]["cursor"]
    windows = [scrubs.Window(int(h["options"]["window"]["start"], 16),
                             int(h["options"]["window"]["end"], 16)) for h in halves]
    assert halves[0]["cursor"] == halves[1]["options"]["window"]["start"]
    for half, window in zip(halves, windows):
        assert half["counts"]["checked"] == sum(window.holds(d) for d in everything)
    # Two halves, one after the other: every object once, and the lost one made again.
    assert sum(h["counts"]["checked"] for h in halves) == len(everything)
    assert sum(h["counts"].get("repaired", 0) for h in halves) == 1
    assert renditions.exists(_rendition(farm.results([results[0]["id"]])[0], "thumb"))


def test_a_store_outage_fails_the_partition_and_the_next_run_checks_it(tmp_path, pg_url, clamd,
                                                                      dask_client):
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        [photo] = _ingest(farm, tmp_path / "photos", 1)
    # The renditions store answers no more (a closed port), and gives up after a second.
    dead = StoreConfig("s3://gone/renditions", {
        "key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"}})
    down = replace(settings, stores={**settings.stores, "renditions": dead}, storage_retry_s=1.0)
    workers = set(dask_client.scheduler_info()["workers"])
    with Farm(down, client=dask_client) as farm:
        cut = farm.scrub(limit=100)
    kinds = [f["kind"] for f in _problems(cut)]
    assert kinds and set(kinds) == {"check_failed"}, cut
    assert all(f["needs_person"] for f in cut["findings"])
    assert cut["counts"]["unchecked"] == 3 and cut["cursor"] is None
    assert set(dask_client.scheduler_info()["workers"]) == workers  # no worker died

    with Farm(settings, client=dask_client) as farm:
        again = farm.scrub(limit=100)
        assert again["options"]["window"] == cut["options"]["window"]  # from the same place
        assert _problems(again) == [] and again["counts"].get("unchecked") is None
        _whole(farm, [photo["id"]])


def test_a_lost_video_rendition_is_made_again(tmp_path, pg_url, clamd, dask_client):
    folder = tmp_path / "media"
    folder.mkdir()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-t", "1", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", "-g", "25", str(folder / "clip.mp4")], check=True)
    recipe = Recipe("scrub-video", (Preset("thumb", 64, 64, fit="cover"),),
                    video=(VideoPreset("h264", heights=(120,), speed="ultrafast", hls=True),))
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        [clip] = farm.ingest([str(folder / "clip.mp4")], recipe).wait()
        assert clip["status"] == "ready", clip
        renditions = farm.stores["renditions"]
        rungs = [r for r in clip["renditions"] if r["format"] == "mp4"]
        assert rungs, clip["renditions"]
        renditions.fs.pipe_file(renditions.key(rungs[0]["sha256"]), b"not a video any more")

        report = farm.scrub()
        assert [(f["kind"], f["action"]) for f in _problems(report)] == [
            ("rendition_corrupt", "repaired")], report
        [after] = farm.results([clip["id"]])
        assert after["status"] == "ready"
        assert sorted(r["preset"] for r in after["renditions"]) == sorted(
            r["preset"] for r in clip["renditions"])
        for rendition in after["renditions"]:
            if rendition["url"] == renditions.url_for(rendition["sha256"]):  # not a package
                assert sha(renditions.get(rendition["sha256"])) == rendition["sha256"]
        assert _problems(farm.scrub()) == []
