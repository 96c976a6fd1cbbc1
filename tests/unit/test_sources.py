"""Turning what a user names into asset requests: files, folders, ids and fingerprints."""

from __future__ import annotations

import fsspec
import pytest

from cluster.storage.sources import SourceError, expand


def tree(root):
    (root / "b.jpg").write_bytes(b"b")
    (root / "a.jpg").write_bytes(b"a")
    (root / "sub").mkdir()
    (root / "sub" / "c.png").write_bytes(b"c")
    (root / ".DS_Store").write_bytes(b"hidden")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"hidden")
    return root


def test_folders_are_walked_in_order_without_hidden_files(tmp_path):
    requests = expand([str(tree(tmp_path))])
    assert [r.source_uri for r in requests] == [
        (tmp_path / name).as_uri() for name in ("a.jpg", "b.jpg", "sub/c.png")]
    assert {r.owner for r in requests} == {"default"}


def test_a_file_named_twice_is_one_request(tmp_path):
    tree(tmp_path)
    requests = expand([str(tmp_path / "a.jpg"), str(tmp_path), str(tmp_path / "a.jpg")])
    uris = [r.source_uri for r in requests]
    assert len(uris) == len(set(uris)) == 3


def test_asset_id_depends_on_owner_and_uri(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    first = expand([str(tmp_path)], owner="alice")
    again = expand([str(tmp_path)], owner="alice")
    other = expand([str(tmp_path)], owner="bob")
    assert [r.asset_id for r in first] == [r.asset_id for r in again]
    assert len({r.asset_id for r in first + other}) == 4


def test_missing_path_raises_naming_it(tmp_path):
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(SourceError, match="nowhere.jpg"):
        expand([str(missing)])


def test_empty_folder_raises_naming_it(tmp_path):
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    (empty / ".hidden").write_bytes(b"x")
    with pytest.raises(SourceError, match="empty-folder"):
        expand([str(empty)])


def test_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"first")
    before = expand([str(path)])[0].fingerprint
    path.write_bytes(b"second version")
    after = expand([str(path)])[0].fingerprint
    assert before is not None and after is not None
    assert before != after
    assert after.startswith(f"{len(b'second version')}:")


def test_a_folder_whose_name_has_a_space_is_expanded(tmp_path):
    folder = tmp_path / "My Photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"a")
    [request] = expand([str(folder)])
    # Source URIs are fsspec URLs, which are not percent-encoded; the stages open them as such.
    assert request.source_uri == f"file://{folder / 'a.jpg'}"
    with fsspec.open(request.source_uri, "rb") as handle:
        assert handle.read() == b"a"


def test_a_local_glob_is_expanded(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    names = [r.source_uri.rsplit("/", 1)[-1] for r in expand([str(tmp_path / "*.jpg")])]
    assert names == ["a.jpg", "b.jpg"]
