"""Near-duplicate groups in a real catalog (SQLite and PostgreSQL): per owner, recorded,
re-searched, read back by the CLI; and a farm run that records every picture's pHash and a
video's keyframe fingerprint, per asset and in bulk partitions."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import insert, select, update

from catalog import Catalog, near_duplicates
from catalog.models import Asset, Blob, NearDuplicateMember, PerceptualHash, Recipe
from catalog.near_duplicates import hash_row
from pipelines.transform.perceptual import to_unsigned
from tests.conftest import make_settings

BASE = 0xF0F0_1234_5678_9ABC


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _populate(catalog: Catalog, assets: list[tuple[str, str, int | None]]) -> None:
    """``(asset_id, owner, phash)``; each asset its own blob, ready (a phash of None: no hash)."""
    with catalog.engine.begin() as conn:
        conn.execute(insert(Recipe.__table__), [{"id": "r", "name": "r", "definition": {}}])
        conn.execute(insert(Blob.__table__), [
            {"sha256": _digest(a), "size": 1, "media_type": "image/jpeg", "store": "originals"}
            for a, _, _ in assets])
        conn.execute(insert(Asset.__table__), [
            {"id": a, "owner": owner, "source_uri": f"file:///in/{a}.jpg", "recipe_id": "r",
             "status": "ready", "retryable": False, "sha256": _digest(a), "attempt": 1}
            for a, owner, _ in assets])
    catalog.write_batch([], [], [], [], [hash_row(_digest(a), phash)
                                         for a, _, phash in assets if phash is not None])


def _members(catalog: Catalog) -> dict[tuple[str, str], str | None]:
    table = NearDuplicateMember.__table__
    with catalog.engine.connect() as conn:
        return {(r.owner, r.asset_id): r.group_id for r in conn.execute(select(table))}


def test_groups_are_per_owner_recorded_and_searched_again(catalog_url):
    catalog = Catalog(catalog_url)
    _populate(catalog, [
        ("a1", "alice", BASE), ("a2", "alice", BASE ^ 0b1111), ("a3", "alice", BASE ^ 0xFFFF_0000),
        ("a4", "alice", ~BASE & (2 ** 64 - 1)), ("a5", "alice", None),
        # Bob holds copies of alice's pictures: his own group, never hers.
        ("b1", "bob", BASE), ("b2", "bob", BASE ^ 0b11), ("b3", "bob", 2 ** 64 - 1)])

    report = near_duplicates.find(catalog)
    assert report == {"threshold": 8, "owners": 2, "assets": 7, "groups": 2, "grouped": 4}
    assert _members(catalog) == {("alice", "a1"): "a1", ("alice", "a2"): "a1",
                                 ("bob", "b1"): "b1", ("bob", "b2"): "b1"}
    [group] = near_duplicates.groups(catalog, "alice")
    assert [a["asset_id"] for a in group["assets"]] == ["a1", "a2"]
    assert group["assets"][0]["phash"] == f"{BASE:016x}"
    assert {a["asset_id"] for g in near_duplicates.groups(catalog, "bob") for a in g["assets"]} \
        == {"b1", "b2"}

    # A wider threshold takes a3 in (16 bits away); then a1 is deleted: a2 and a3 are
    # 20 bits apart at 16, so alice's group breaks up, and the rows say so.
    assert near_duplicates.find(catalog, "alice", threshold=16)["grouped"] == 3
    with catalog.engine.begin() as conn:
        conn.execute(update(Asset.__table__).where(Asset.__table__.c.id == "a1")
                     .values(deleted_at=Asset.__table__.c.created_at))
    near_duplicates.find(catalog, "alice", threshold=16)
    assert near_duplicates.groups(catalog, "alice") == []
    members = _members(catalog)
    assert {k: v for k, v in members.items() if k[0] == "alice"} == {
        ("alice", "a1"): None, ("alice", "a2"): None, ("alice", "a3"): None}
    assert members[("bob", "b1")] == "b1"  # another owner's search leaves bob's alone

    with pytest.raises(ValueError, match="0 to 63"):
        near_duplicates.find(catalog, threshold=64)


def test_the_command_searches_and_prints_groups(sqlite_url, tmp_path, monkeypatch, capsys):
    from cluster.cli.main import main

    catalog = Catalog(sqlite_url)
    catalog.upgrade()
    _populate(catalog, [("a1", "alice", BASE), ("a2", "alice", BASE ^ 0b11),
                        ("b1", "bob", BASE)])
    monkeypatch.setenv("MEDIAFARM_CATALOG_URL", sqlite_url)
    monkeypatch.setenv("MEDIAFARM_DATA_DIR", str(tmp_path / "data"))
    assert main(["near-duplicates", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["search"]["groups"] == 1
    assert list(out["groups"]) == ["alice"]
    assert [a["asset_id"] for a in out["groups"]["alice"][0]["assets"]] == ["a1", "a2"]
    assert main(["near-duplicates", "--owner", "bob", "--no-search"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["near-duplicates", "--owner", "alice"]) == 0
    printed = capsys.readouterr().out
    assert "alice  group a1  (2 assets)" in printed and "file:///in/a2.jpg" in printed
    assert main(["near-duplicates", "--threshold", "64"]) == 2


@pytest.mark.slow
def test_a_farm_run_records_hashes_and_finds_the_copies(catalog_url, tmp_path, clamd,
                                                        dask_client):
    from cluster.farm import Farm
    from pipelines.recipe import Preset, Recipe as RecipeSpec, VideoPreset
    from tests import near_duplicate_set as evaluation
    from tests.media_samples import phone_video

    folder, bulk = tmp_path / "in", tmp_path / "bulk"
    folder.mkdir()
    bulk.mkdir()
    source = evaluation.synthetic(1, 1200, 800)
    (folder / "photo.jpg").write_bytes(source.jpegsave_buffer(Q=90))
    (folder / "photo-small.webp").write_bytes(source.resize(0.3).webpsave_buffer(Q=60))
    (folder / "other.jpg").write_bytes(evaluation.synthetic(2, 1200, 800).jpegsave_buffer(Q=90))
    (bulk / "photo-copy.jpg").write_bytes(source.resize(0.5).jpegsave_buffer(Q=70))
    video = phone_video(tmp_path, seconds=2.0)
    recipe = RecipeSpec("tiny", (Preset("small", 160),),
                        video=(VideoPreset("h264", heights=(144,), speed="ultrafast"),))
    settings = make_settings(tmp_path / "data", catalog_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        batch = farm.ingest([str(folder), str(video)], recipe).wait()
        assert sorted(r["status"] for r in batch) == ["ready"] * 4
        job = farm.backfill(str(bulk), recipe)  # a bulk partition: the buffered writes
        assert job["assets"] == {"ready": 1}
        groups = farm.near_duplicates()
        assert farm.near_duplicates(owner="nobody") == []

    with farm.catalog.engine.connect() as conn:
        hashes = {r.sha256: r for r in conn.execute(select(PerceptualHash.__table__))}
    assert len(hashes) == 5  # every picture, and the video's poster
    keyframed = [r for r in hashes.values() if r.keyframes]
    assert len(keyframed) == 1 and 1 <= len(keyframed[0].keyframes) <= 4
    assert all(-2 ** 63 <= k < 2 ** 63 for k in keyframed[0].keyframes)
    [group] = groups
    names = sorted(a["source_uri"].rsplit("/", 1)[-1] for a in group["assets"])
    assert names == ["photo-copy.jpg", "photo-small.webp", "photo.jpg"]
    stored = {sha: to_unsigned(row.phash) for sha, row in hashes.items()}
    assert {a["sha256"]: int(a["phash"], 16) for a in group["assets"]} == {
        a["sha256"]: stored[a["sha256"]] for a in group["assets"]}
    assert hashes[_sha256_of(folder / "photo.jpg")].algorithm == "imagehash-phash-64"


def _sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
