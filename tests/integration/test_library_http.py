"""Tags and collections over HTTP, end to end with two owners on a real server process."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from catalog import upgrade
from cluster.cli.samples import scene
from tests.conftest import make_settings
from tests.services.api_server import Deployment, start_api_server, wait_terminal
from tests.services.api_server import assert_error as _error
from tests.services.postgres import scratch_database


@pytest.fixture(scope="module")
def api(tmp_path_factory, clamd, dask_client, pg_server) -> Deployment:
    root = tmp_path_factory.mktemp("http-library")
    with scratch_database(pg_server) as catalog_url:
        upgrade(catalog_url)
        settings = make_settings(root / "data", catalog_url, clamd.url)
        server = start_api_server(settings, root, scheduler=dask_client.scheduler.address)
        yield Deployment(server, settings)
        server.stop()


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def uploaded(api, http) -> dict[str, list[str]]:
    """Three ready photos of alice's and one of bob's: owner -> asset ids."""
    owned: dict[str, list[str]] = {"alice": [], "bob": []}
    for owner, seed in [("alice", 31), ("alice", 32), ("alice", 33), ("bob", 34)]:
        headers = api.token(owner)
        answer = http.post(f"{api.url}/v1/assets", headers=headers, files={
            "file": (f"photo-{seed}.jpg", scene(320, 240, seed).jpegsave_buffer(Q=85),
                     "image/jpeg")})
        assert answer.status_code == 202, answer.text
        assert wait_terminal(http, answer.json()["status_url"], headers)["status"] == "ready"
        owned[owner].append(answer.json()["id"])
    return owned


def test_tags_over_http_are_the_owners_own(api, http, uploaded):
    alice, bob = api.token("alice"), api.token("bob")
    a1, a2, _ = uploaded["alice"]
    [b1] = uploaded["bob"]
    for asset, tag in [(a1, "Beach"), (a2, "beach"), (a1, "Été 2024")]:
        assert http.put(f"{api.url}/v1/assets/{asset}/tags/{quote(tag)}",
                        headers=alice).status_code == 204
    assert http.put(f"{api.url}/v1/assets/{b1}/tags/secret", headers=bob).status_code == 204
    assert http.get(f"{api.url}/v1/tags", headers=alice).json() == [
        {"tag": "beach", "assets": 2}, {"tag": "été 2024", "assets": 1}]
    assert http.get(f"{api.url}/v1/tags", headers=bob).json() == [{"tag": "secret", "assets": 1}]
    assert http.get(f"{api.url}/v1/assets/{a1}/tags", headers=alice).json() == {
        "asset_id": a1, "tags": ["beach", "été 2024"]}
    # bob cannot read, add or remove alice's tags: her asset is missing to him
    _error(http.get(f"{api.url}/v1/assets/{a1}/tags", headers=bob), 404, "not_found")
    _error(http.put(f"{api.url}/v1/assets/{a1}/tags/mine", headers=bob), 404, "not_found")
    _error(http.delete(f"{api.url}/v1/assets/{a1}/tags/beach", headers=bob), 404, "not_found")
    _error(http.put(f"{api.url}/v1/assets/{a1}/tags/{quote('<b>')}", headers=alice),
           422, "invalid_name")
    assert http.delete(f"{api.url}/v1/assets/{a1}/tags/BEACH", headers=alice).status_code == 204
    assert http.get(f"{api.url}/v1/assets/{a1}/tags", headers=alice).json()["tags"] == [
        "été 2024"]
    _error(http.put(f"{api.url}/v1/assets/{a1}/tags/x", headers=api.token("alice", "read")),
           403, "forbidden")


def test_collections_over_http_are_the_owners_own(api, http, uploaded):
    alice, bob = api.token("alice"), api.token("bob")
    a1, a2, a3 = uploaded["alice"]
    [b1] = uploaded["bob"]
    trip = f"{api.url}/v1/collections/{quote('Trip to Rome')}"
    made = http.put(trip, headers=alice)
    assert made.status_code == 200 and made.json()["assets"] == 0
    for asset in (a1, a2):
        assert http.put(f"{trip}/assets/{asset}", headers=alice).status_code == 204
    _error(http.put(f"{trip}/assets/{b1}", headers=alice), 404, "not_found")  # bob's photo
    _error(http.put(f"{trip}/assets/{a3}", headers=bob), 404, "not_found")    # alice's photo
    # bob's own "Trip to Rome" is another collection
    assert http.put(f"{trip}/assets/{b1}", headers=bob).status_code == 204
    listed = http.get(f"{api.url}/v1/collections", headers=alice).json()
    assert [(c["name"], c["assets"]) for c in listed] == [("Trip to Rome", 2)]
    assert [(c["name"], c["assets"]) for c in
            http.get(f"{api.url}/v1/collections", headers=bob).json()] == [("Trip to Rome", 1)]
    assert http.delete(f"{trip}/assets/{a1}", headers=alice).status_code == 204
    _error(http.put(f"{api.url}/v1/collections/{quote('bad' + chr(0x202e))}", headers=alice),
           422, "invalid_name")
    assert http.delete(trip, headers=alice).status_code == 204
    _error(http.delete(trip, headers=alice), 404, "not_found")
    assert http.get(f"{api.url}/v1/collections", headers=alice).json() == []
    assert [c["assets"] for c in http.get(f"{api.url}/v1/collections", headers=bob).json()] == [1]


def test_search_over_http_pages_the_owners_assets_and_refuses_nonsense(api, http, uploaded):
    alice, bob = api.token("alice"), api.token("bob")
    a1, a2, a3 = uploaded["alice"]
    assert http.put(f"{api.url}/v1/assets/{a3}/tags/searchable", headers=alice).status_code == 204
    seen, after = [], None
    while True:
        params = {"kind": "image", "limit": 1, "min_width": 320, **({"after": after} if after else {})}
        page = http.get(f"{api.url}/v1/search", headers=alice, params=params)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        after = page.json()["next"]
        if after is None:
            break
    assert sorted(seen) == sorted([a1, a2, a3])
    [found] = http.get(f"{api.url}/v1/search", headers=alice,
                       params={"tags": "searchable"}).json()["items"]
    assert (found["id"], found["width"], found["height"]) == (a3, 320, 240)
    assert found["tags"] == ["searchable"] and found["kind"] == "image"
    assert [i["id"] for i in http.get(f"{api.url}/v1/search", headers=bob).json()["items"]] == (
        uploaded["bob"])
    assert http.get(f"{api.url}/v1/search", headers=bob,
                    params={"tags": "searchable"}).json()["items"] == []
    for nonsense in [{"kind": "pdf"}, {"limit": 10_000}, {"owner": "alice"},
                     {"sort": "duration", "after": "AAAA"}, {"min_width": "wide"},
                     {"created_from": "2025-01-01", "created_to": "2024-01-01"}]:
        _error(http.get(f"{api.url}/v1/search", headers=bob, params=nonsense), 422)
