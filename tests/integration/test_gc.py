"""Delete for real: GC of unreferenced blobs, owner erasure, and a GC racing an ingest,
on SQLite and PostgreSQL with local stores."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import func, select

from catalog import Catalog, library, webhooks
from catalog.erasure import erasures
from catalog.gc import Swept, mark, sweep
from catalog.models import (ApiToken, Asset, AssetVersion, Blob, GcMark, PerceptualHash,
                            Rendition, StageRun, Upload)
from catalog.near_duplicates import hash_row
from catalog.repository import utcnow
from catalog.records import AssetRequest, RenditionRecord, StageRecord
from cluster import gc
from cluster.http import owned
from cluster.storage.stores import Store
from tests.conftest import make_settings


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def farm(tmp_path, catalog_url):
    settings = make_settings(tmp_path, catalog_url, "tcp://127.0.0.1:1")
    stores = {name: Store(name, config) for name, config in settings.stores.items()}
    catalog = Catalog(catalog_url)
    catalog.ensure_recipe("r1", "r1", {})
    return catalog, stores


def ingest(catalog: Catalog, stores: dict, asset_id: str, owner: str, original: bytes,
           hls: bool = False) -> dict:
    """What the stages leave behind for one ready asset: objects and rows."""
    sha = digest(original)
    request = AssetRequest(asset_id, owner, f"file:///{asset_id}.jpg", None)
    attempt = catalog.queue([request], "r1", catalog.assets([asset_id]))[asset_id]
    catalog.pin_blobs([sha])
    stores["originals"].put(sha, original)
    catalog.put_blob(sha, len(original), "image/jpeg", "originals")
    thumb = b"thumb of " + original
    stores["renditions"].put(digest(thumb), thumb)
    records = [RenditionRecord("thumb", digest(thumb), "webp", 10, 10, len(thumb), 80,
                               "image/webp", "p1")]
    if hls:
        prefix = f"hls/{sha}/p2"
        stores["renditions"].put_at(f"{prefix}/master.m3u8", b"#EXTM3U\n")
        stores["renditions"].put_at(f"{prefix}/360p/seg1.m4s", b"segment")
        master = b"#EXTM3U\n"
        stores["renditions"].put(digest(master), master)
        records.append(RenditionRecord("video-hls", digest(master), "hls", None, None,
                                       len(master), None, "application/vnd.apple.mpegurl", "p2",
                                       encoder={"playlist": f"{prefix}/master.m3u8"}))
    catalog.record_stage(StageRecord(asset_id, "hash", attempt, "ok", utcnow(), utcnow()))
    catalog.write_batch([], [], [], [], [hash_row(sha, 12345)])
    catalog.record_ready(asset_id, attempt, sha, "r1", records, "renditions")
    return {"sha": sha, "thumb": digest(thumb), "records": records}


def count(catalog: Catalog, table, *where) -> int:
    with catalog.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table.__table__).where(*where)).scalar_one()


def test_delete_then_gc_leaves_no_object_and_no_orphan_row(farm):
    catalog, stores = farm
    made = ingest(catalog, stores, "a1", "alice", b"alice's picture", hls=True)
    assert owned.signed_rendition(catalog.engine, "a1", made["thumb"]) is not None
    owned.mark_deleted(catalog.engine, "a1")
    # Undeliverable at once, before any GC.
    assert owned.signed_rendition(catalog.engine, "a1", made["thumb"]) is None
    assert owned.published_rendition(catalog.engine, "alice", made["thumb"]) is None

    dry = gc.run_gc(catalog, stores, grace_s=0, dry_run=True)
    assert dry.assets_purged == 1 and stores["originals"].exists(made["sha"])
    report = gc.run_gc(catalog, stores, grace_s=0)
    assert report.assets_purged == 1 and report.packages == 1
    assert stores["originals"].digests() == [] and stores["renditions"].digests() == []
    assert stores["renditions"].fs.find(stores["renditions"].key_at(f"hls/{made['sha']}")) == []
    for table in (Asset, AssetVersion, StageRun, Blob, Rendition, PerceptualHash, GcMark):
        assert count(catalog, table) == 0, table.__tablename__


def test_gc_keeps_deleted_assets_and_marks_within_the_grace_period(farm):
    catalog, stores = farm
    made = ingest(catalog, stores, "a1", "alice", b"alice's picture")
    owned.mark_deleted(catalog.engine, "a1")
    assert gc.run_gc(catalog, stores, grace_s=3600).assets_purged == 0
    owned.undelete(catalog.engine, "a1")  # still possible
    assert stores["originals"].exists(made["sha"]) and count(catalog, Asset) == 1


def test_an_object_shared_with_another_owners_asset_survives(farm):
    catalog, stores = farm
    made = ingest(catalog, stores, "a1", "alice", b"the same bytes")
    ingest(catalog, stores, "b1", "bob", b"the same bytes")
    owned.mark_deleted(catalog.engine, "a1")
    gc.run_gc(catalog, stores, grace_s=0)
    assert stores["originals"].exists(made["sha"]) and stores["renditions"].exists(made["thumb"])
    assert count(catalog, Asset) == 1 and count(catalog, Rendition) == 1
    assert owned.published_rendition(catalog.engine, "bob", made["thumb"]) is not None


def test_owner_erase_removes_everything_of_theirs_and_keeps_the_others(farm):
    catalog, stores = farm
    alone = ingest(catalog, stores, "a1", "alice", b"only alice's", hls=True)
    shared = ingest(catalog, stores, "a2", "alice", b"both have it")
    bobs = ingest(catalog, stores, "b1", "bob", b"both have it")
    ingest(catalog, stores, "b2", "bob", b"only bob's")
    library.add_tags(catalog.engine, "alice", ["a1"], ["cats"])
    library.create_collection(catalog.engine, "alice", "best")
    library.add_to_collection(catalog.engine, "alice", "best", ["a1", "a2"])
    library.add_tags(catalog.engine, "bob", ["b1"], ["dogs"])
    stores["buffer"].put_at("owners/alice/tus/u1", b"half an upload")
    with catalog.engine.begin() as conn:
        conn.execute(Upload.__table__.insert(), [
            {"id": "u1", "owner": "alice", "key": "owners/alice/tus/u1", "status": "pending"},
            {"id": "u2", "owner": "bob", "key": "owners/bob/x", "status": "pending"}])
        conn.execute(ApiToken.__table__.insert(), [
            {"id": "t1", "token_sha256": "1" * 64, "owner": "alice", "scopes": ["read"]},
            {"id": "t2", "token_sha256": "2" * 64, "owner": "bob", "scopes": ["read"]}])

    for owner in ("alice", "bob"):  # their webhook secrets and a delivery each
        webhooks.owner_secret(catalog.engine, owner)
        webhooks.add_delivery(catalog.engine, owner, "https://hooks.example/x", asset_id="a1")

    record = gc.erase_owner(catalog, stores, "alice", "test")
    assert record["counts"]["assets"] == 2 and record["counts"]["api_tokens"] == 1
    assert record["counts"]["webhook_secrets"] == 1 and record["counts"]["webhook_deliveries"] == 1
    assert [d["owner"] for d in webhooks.deliveries(catalog.engine, "bob")] == ["bob"]
    assert record["counts"]["gc_buffers"] == 1
    assert not stores["originals"].exists(alone["sha"])
    assert not stores["renditions"].exists(alone["thumb"])
    assert stores["renditions"].fs.find(stores["renditions"].key_at(f"hls/{alone['sha']}")) == []
    assert not stores["buffer"].fs.exists(stores["buffer"].key_at("owners/alice/tus/u1"))
    assert stores["originals"].exists(shared["sha"]) and stores["renditions"].exists(bobs["thumb"])
    assert count(catalog, Asset, Asset.owner == "alice") == 0
    assert count(catalog, Asset, Asset.owner == "bob") == 2
    assert count(catalog, Upload) == 1 and count(catalog, ApiToken) == 1
    assert library.collections(catalog.engine, "alice") == []
    assert [t["tag"] for t in library.tags(catalog.engine, "bob")] == ["dogs"]
    assert count(catalog, Blob) == 4  # bob's two originals and two thumbnails
    [erased] = erasures(catalog.engine, "alice")
    assert erased["erased_by"] == "test" and erased["counts"]["gc_blobs"] == 3


def test_a_gc_racing_an_ingest_of_the_same_bytes_never_deletes_what_it_references(farm):
    """The sweep holds its mark while it deletes; the ingest pins the bytes meanwhile. Both
    orders of the race end with the object stored and its rows there."""
    catalog, stores = farm
    made = ingest(catalog, stores, "a1", "alice", b"bytes both want")
    owned.mark_deleted(catalog.engine, "a1")
    gc.run_gc(catalog, stores, grace_s=3600)  # purges nothing yet
    from catalog.gc import purge_deleted
    purge_deleted(catalog.engine, utcnow())
    mark(catalog.engine, [made["sha"]], utcnow())

    deleting, pinned = threading.Event(), threading.Event()
    remove = gc.remover(stores)

    def slow_remove(objects, packages):
        deleting.set()  # the sweep holds the mark and is deleting the objects now
        pinned.wait(timeout=2)  # the ingest's pin, if it could pass, would set this
        remove(objects, packages)

    errors: list[BaseException] = []

    def run_ingest():
        try:
            deleting.wait(timeout=60)
            ingest(catalog, stores, "b1", "bob", b"bytes both want")
            pinned.set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    other = threading.Thread(target=run_ingest)
    other.start()
    sweep(catalog.engine, made["sha"], utcnow(), slow_remove, Swept())
    other.join(timeout=120)
    assert not other.is_alive() and errors == []
    assert stores["originals"].exists(made["sha"]), "the ingest's original was deleted"
    assert stores["renditions"].exists(made["thumb"])
    assert count(catalog, Blob, Blob.sha256 == made["sha"]) == 1
    assert count(catalog, Rendition) == 1
    assert owned.published_rendition(catalog.engine, "bob", made["thumb"]) is not None
    # And the ingest now holds it: a GC run keeps it.
    gc.run_gc(catalog, stores, grace_s=0)
    assert stores["originals"].exists(made["sha"])


def test_an_ingest_pinned_before_the_sweep_wins(farm):
    catalog, stores = farm
    made = ingest(catalog, stores, "a1", "alice", b"pinned first")
    owned.mark_deleted(catalog.engine, "a1")
    from catalog.gc import purge_deleted
    purge_deleted(catalog.engine, utcnow())
    mark(catalog.engine, [made["sha"]], utcnow())
    catalog.pin_blobs([made["sha"]])  # an ingest of the same bytes took them up
    assert not sweep(catalog.engine, made["sha"], utcnow(), gc.remover(stores), Swept())
    assert stores["originals"].exists(made["sha"])
