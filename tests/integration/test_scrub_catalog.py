"""The scrub's catalog side on SQLite and PostgreSQL: orphans removed only on a later
sighting, never once a row names them or an ingest pinned them; marks set and cleared;
an owner's erasure takes their scrub findings (catalog.scrubs)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select

from catalog import scrubs
from catalog.models import ScrubFinding, ScrubRun
from catalog.repository import utcnow
from cluster import gc
from cluster.storage.stores import Store
from tests.integration.test_gc import farm, ingest  # noqa: F401 - farm: the GC tests' fixture


def _orphan(store: Store, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data)
    return digest


def test_an_orphan_goes_only_on_a_later_sighting_and_never_once_named(farm):
    catalog, stores = farm
    renditions, engine = stores["renditions"], catalog.engine
    later = utcnow() + timedelta(hours=1)
    lone, pinned, recorded = (_orphan(renditions, d) for d in (b"lone", b"pinned", b"recorded"))
    digests = [lone, pinned, recorded]
    assert scrubs.named(engine, digests) == set()
    assert scrubs.sight(engine, "renditions", digests, utcnow()) == {}  # first seen: recorded
    assert set(scrubs.sight(engine, "renditions", digests, utcnow())) == set(digests)

    def remove(digest: str, cutoff=later) -> bool:
        return scrubs.remove_orphan(engine, "renditions", digest, cutoff,
                                    lambda: renditions.delete(digest))

    assert not remove(lone, utcnow() - timedelta(hours=1))  # seen within the grace period
    catalog.pin_blobs([pinned])  # an ingest about to store these bytes takes its sighting
    catalog.put_blob(recorded, 8, "image/webp", "renditions")  # a row names it now
    assert not remove(pinned) and not remove(recorded)
    scrubs.sight(engine, "renditions", [recorded], utcnow())  # seen again before its row...
    assert not remove(recorded)  # ...and still kept: the row is checked under the lock
    assert remove(lone) and not renditions.exists(lone)
    assert renditions.exists(pinned) and renditions.exists(recorded)


def test_a_mark_is_shown_until_the_original_is_found_whole(farm):
    catalog, stores = farm
    made = ingest(catalog, stores, "a1", "alice", b"alice's picture")
    attempt = catalog.assets(["a1"])["a1"]["attempt"]
    scrubs.mark(catalog, [("a1", attempt)], "original_missing", "gone", utcnow(), "test")
    assert scrubs.marks(catalog.engine, ["a1"]) == {"a1": ("original_missing", "gone")}
    assert catalog.assets(["a1"])["a1"]["status"] == "ready"
    assert scrubs.clear_marks(catalog.engine, [made["sha"]], utcnow()) == 1
    assert scrubs.marks(catalog.engine, ["a1"]) == {}


def test_an_erasure_takes_the_owner_s_scrub_findings(farm):
    catalog, stores = farm
    ingest(catalog, stores, "a1", "alice", b"alice's picture")
    ingest(catalog, stores, "b1", "bob", b"bob's picture")
    scrubs.start_run(catalog.engine, "run-1", {}, utcnow())
    found = scrubs.Finding("renditions", "0" * 64, None, "rendition_missing", "repaired",
                           "made again", ["a1", "b1"])
    scrubs.finish_run(catalog.engine, "run-1", "finished", {"repaired": 1}, None, [found],
                      utcnow())
    assert [f["asset_id"] for f in scrubs.findings(catalog.engine, "run-1")] == ["a1", "b1"]

    record = gc.erase_owner(catalog, stores, "alice", "test")
    assert record["counts"]["scrub_findings"] == 1
    with catalog.engine.connect() as conn:
        left = conn.execute(select(ScrubFinding.asset_id)).scalars().all()
        run = conn.execute(select(ScrubRun.counts)).scalar_one()
    assert left == ["b1"] and run == {"repaired": 1}


def test_a_window_walks_the_blobs_of_the_stores_asked_for(farm):
    catalog, stores = farm
    made = [ingest(catalog, stores, f"a{i}", "alice", f"picture {i}".encode()) for i in range(4)]
    originals = sorted(m["sha"] for m in made)
    renditions = sorted(m["thumb"] for m in made)
    whole = [t for batch in scrubs.targets(catalog.engine, scrubs.Window(), ["originals"], 3)
             for t in batch]
    assert [t.sha256 for t in whole] == originals and all(t.original for t in whole)
    start = int(renditions[2][:16], 16)
    both = [t.sha256 for batch in scrubs.targets(catalog.engine, scrubs.Window(start),
                                                  ["originals", "renditions"], 2, limit=5)
            for t in batch]
    walk = sorted(originals + renditions)
    at = walk.index(renditions[2])
    assert both == (walk[at:] + walk[:at])[:5]  # from the cursor, wrapping, five at most

