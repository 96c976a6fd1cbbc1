"""Tags and collections in the catalog, on SQLite and PostgreSQL: owner-scoped, all or nothing."""

from __future__ import annotations

import uuid

import pytest

from catalog import Catalog, library
from catalog.records import AssetRequest
from cluster.storage.sources import asset_id


@pytest.fixture
def catalog(catalog_url) -> Catalog:
    catalog = Catalog(catalog_url)
    catalog.upgrade()
    catalog.ensure_recipe("r", "recipe", {})
    return catalog


def _assets(catalog: Catalog, owner: str, count: int) -> list[str]:
    requests = [AssetRequest(asset_id(owner, f"file:///{owner}/{i}.jpg"), owner,
                             f"file:///{owner}/{i}.jpg", None) for i in range(count)]
    catalog.queue(requests, "r", {})
    return [r.asset_id for r in requests]


def _tags_of(engine, owner: str, ids: list[str]) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return library.tags_of(conn, owner, ids)


def test_tags_are_added_once_listed_with_counts_and_removed(catalog):
    a, b = _assets(catalog, "ann", 2)
    engine = catalog.engine
    assert library.add_tags(engine, "ann", [a, b], ["Beach", "sunset"]) == 4
    assert library.add_tags(engine, "ann", [a], ["beach"]) == 0  # the same tag, folded
    assert library.tags(engine, "ann") == [{"tag": "beach", "assets": 2},
                                           {"tag": "sunset", "assets": 2}]
    assert library.asset_tags(engine, "ann", a) == ["beach", "sunset"]
    assert library.remove_tags(engine, "ann", [a], ["SUNSET"]) == 1
    assert _tags_of(engine, "ann", [a, b]) == {a: ["beach"], b: ["beach", "sunset"]}


def test_another_owners_asset_cannot_be_tagged_collected_or_read(catalog):
    [mine] = _assets(catalog, "ann", 1)
    [theirs] = _assets(catalog, "bob", 1)
    engine = catalog.engine
    library.add_tags(engine, "bob", [theirs], ["private"])
    with pytest.raises(library.UnknownAssets) as caught:
        library.add_tags(engine, "ann", [mine, theirs], ["x"])
    assert caught.value.missing == [theirs]
    assert _tags_of(engine, "ann", [mine]) == {}  # all or nothing: mine untagged too
    with pytest.raises(library.UnknownAssets):
        library.asset_tags(engine, "ann", theirs)
    with pytest.raises(library.UnknownAssets):
        library.add_to_collection(engine, "ann", "trip", [theirs])
    assert library.tags(engine, "ann") == []
    assert _tags_of(engine, "ann", [theirs]) == {}
    with pytest.raises(library.UnknownAssets):
        library.add_tags(engine, "ann", [str(uuid.uuid4())], ["x"])


def test_collections_are_per_owner_counted_and_deleted_without_their_assets(catalog):
    a, b, c = _assets(catalog, "ann", 3)
    [theirs] = _assets(catalog, "bob", 1)
    engine = catalog.engine
    assert library.add_to_collection(engine, "ann", "Rome 2024", [a, b]) == 2
    assert library.add_to_collection(engine, "ann", "Rome 2024", [b, c]) == 1
    library.add_to_collection(engine, "bob", "Rome 2024", [theirs])  # the same name, bob's own
    [rome] = library.collections(engine, "ann")
    assert (rome["name"], rome["assets"]) == ("Rome 2024", 3)
    assert library.create_collection(engine, "ann", " Rome  2024")["id"] == rome["id"]
    assert library.remove_from_collection(engine, "ann", "Rome 2024", [a]) == 1
    library.create_collection(engine, "ann", "empty")
    assert [(r["name"], r["assets"]) for r in library.collections(engine, "ann")] == [
        ("Rome 2024", 2), ("empty", 0)]
    library.delete_collection(engine, "ann", "Rome 2024")
    assert [r["name"] for r in library.collections(engine, "ann")] == ["empty"]
    assert [r["assets"] for r in library.collections(engine, "bob")] == [1]
    assert len(catalog.assets([a, b, c])) == 3  # the assets stay
    with pytest.raises(library.UnknownCollection):
        library.delete_collection(engine, "ann", "Rome 2024")


def test_the_cli_tags_and_collects(catalog, catalog_url, monkeypatch, capsys):
    from cluster.cli.main import main

    a, b = _assets(catalog, "ann", 2)
    monkeypatch.setenv("MEDIAFARM_CATALOG_URL", catalog_url)
    assert main(["tag", a, b, "-t", "Beach", "-t", "dog", "--owner", "ann"]) == 0
    assert main(["tag", a, "-t", "dog", "--remove", "--owner", "ann"]) == 0
    assert main(["collection", "add", "Best of", a, "--owner", "ann"]) == 0
    capsys.readouterr()
    assert main(["tags", "--owner", "ann"]) == 0
    assert capsys.readouterr().out.splitlines() == ["beach\t2", "dog\t1"]
    assert main(["collection", "list", "--owner", "ann"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Best of\t1"]
    assert main(["tag", a, "-t", "x", "--owner", "bob"]) == 2  # not bob's asset
    assert "no such asset" in capsys.readouterr().err
    assert main(["collection", "delete", "Nope", "--owner", "ann"]) == 2
