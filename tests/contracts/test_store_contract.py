"""One contract, four backends: local files, memory, S3 and R2 (both real moto servers over HTTP)."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import pytest

from cluster.config import StoreConfig
from cluster.storage.stores import STREAM_BLOCK, Store
from pipelines.upload.served_source import ServedReader
from tests.services.s3 import DUMMY_KEY, DUMMY_SECRET, REGION, make_bucket

CREDENTIALS = {"key": DUMMY_KEY, "secret": DUMMY_SECRET, "skip_instance_cache": True}


def blob(text: str) -> tuple[str, bytes]:
    data = text.encode()
    return hashlib.sha256(data).hexdigest(), data


def fresh_bucket(endpoint_url: str) -> str:
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    make_bucket(endpoint_url, bucket)
    return bucket


@pytest.fixture(params=["file", "memory", "s3", "r2"])
def store(request, tmp_path) -> Store:
    if request.param == "file":
        config = StoreConfig(tmp_path.as_uri())
    elif request.param == "memory":
        config = StoreConfig(f"memory://contract-{uuid.uuid4().hex}")
    elif request.param == "s3":
        url = request.getfixturevalue("s3_endpoint").url
        config = StoreConfig(f"s3://{fresh_bucket(url)}/prefix", {
            **CREDENTIALS, "client_kwargs": {"endpoint_url": url, "region_name": REGION}})
    else:
        url = request.getfixturevalue("r2_endpoint").url
        config = StoreConfig(f"r2://{fresh_bucket(url)}/prefix", {**CREDENTIALS, "endpoint_url": url})
    return Store("renditions", config)


def test_put_then_get_round_trips(store):
    digest, data = blob("round trip")
    store.put(digest, data)
    assert store.get(digest) == data


def test_put_is_put_if_absent(store):
    digest, data = blob("once")
    assert store.put(digest, data) is True
    assert store.put(digest, b"other bytes under the same digest") is False
    assert store.get(digest) == data


def test_objects_live_at_sha256_ab_cd_digest(store):
    digest, data = blob("layout")
    store.put(digest, data)
    layout = f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert store.fs.cat_file(f"{store.root}/{layout}") == data
    assert store.url_for(digest).startswith(store.url)
    assert store.url_for(digest).endswith(layout)


def test_exists_tells_stored_from_absent(store):
    digest, data = blob("exists")
    other, _ = blob("never stored")
    store.put(digest, data)
    assert store.exists(digest)
    assert not store.exists(other)


@pytest.mark.parametrize("bad", [
    hashlib.sha256(b"x").hexdigest().upper(),
    hashlib.sha256(b"x").hexdigest()[:63],
    hashlib.sha256(b"x").hexdigest() + "0",
    "../" + hashlib.sha256(b"x").hexdigest()[3:],
])
def test_bad_digest_is_refused(store, bad):
    for operation in (store.exists, store.get, lambda d: store.put(d, b"x")):
        with pytest.raises(ValueError):
            operation(bad)


def test_digests_lists_exactly_what_was_put(store):
    assert store.digests() == []
    put = [blob(f"item {i}") for i in range(3)]
    for digest, data in put:
        store.put(digest, data)
    assert store.digests() == sorted(digest for digest, _ in put)


def test_large_object_round_trips(store):
    data = bytes(range(256)) * (5 * 4096) + b"!"  # 5 MiB + 1
    digest = hashlib.sha256(data).hexdigest()
    assert store.put(digest, data)
    assert store.get(digest) == data


def test_file_store_leaves_no_partial_files(tmp_path):
    store = Store("renditions", StoreConfig(tmp_path.as_uri()))
    for i in range(5):
        store.put(*blob(f"item {i}"))
        store.put(*blob(f"item {i}"))
    assert len(store.digests()) == 5
    assert [p for p in tmp_path.rglob("*") if ".partial-" in p.name] == []


def test_file_store_concurrent_writers_leave_one_intact_object(tmp_path):
    store = Store("renditions", StoreConfig(tmp_path.as_uri()))
    data = bytes(range(256)) * 8192  # 2 MiB: long enough for the writes to overlap
    digest = hashlib.sha256(data).hexdigest()
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    written: list[bool] = []

    def write() -> None:
        start.wait()
        try:
            written.append(store.put(digest, data))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(written) == [False, True]  # exactly one writer created the object
    assert store.digests() == [digest]
    assert hashlib.sha256(store.get(digest)).hexdigest() == digest
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [digest]


def test_file_store_writes_under_the_folder_its_url_names(tmp_path):
    folder = tmp_path / "media store"
    store = Store("renditions", StoreConfig(folder.as_uri()))
    digest, data = blob("space in the path")
    store.put(digest, data)
    assert (folder / "sha256" / digest[:2] / digest[2:4] / digest).read_bytes() == data


def test_r2_store_needs_an_account_or_an_endpoint():
    with pytest.raises(ValueError, match="account_id"):
        Store("renditions", StoreConfig("r2://bucket/prefix", dict(CREDENTIALS)))


def test_r2_account_id_names_the_cloudflare_endpoint():
    store = Store("renditions", StoreConfig("r2://bucket/prefix", {**CREDENTIALS, "account_id": "acct123"}))
    assert store.fs.client_kwargs == {"endpoint_url": "https://acct123.r2.cloudflarestorage.com",
                                      "region_name": "auto"}
    assert store.root == "bucket/prefix"
    assert store.url_for("ab" * 32).startswith("r2://bucket/prefix/sha256/ab/ab/")


def test_put_at_stores_keyed_objects_beside_the_content_addressed_ones(store):
    assert store.put_at("hls/abc/720p/index.m3u8", b"#EXTM3U\n")
    assert not store.put_at("hls/abc/720p/index.m3u8", b"#EXTM3U\n")
    assert store.get_at("hls/abc/720p/index.m3u8") == b"#EXTM3U\n"
    assert store.url_at("hls/abc/720p/index.m3u8") == f"{store.url}/hls/abc/720p/index.m3u8"
    assert store.digests() == []  # keyed objects never pose as content-addressed ones


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../b", "a//b", "sha256/ab/cd/x", ""])
def test_put_at_refuses_paths_that_escape_or_collide(store, bad):
    with pytest.raises(ValueError):
        store.put_at(bad, b"x")


def test_put_file_streams_a_local_file_put_if_absent(store, tmp_path):
    data = bytes(range(256)) * (5 * 4096) + b"?"  # over s3fs's multipart threshold
    digest = hashlib.sha256(data).hexdigest()
    local = tmp_path / "upload.bin"
    local.write_bytes(data)
    assert store.put_file(digest, str(local)) is True
    assert store.put_file(digest, str(local)) is False
    assert store.get(digest) == data
    assert store.digests() == [digest]
    assert local.read_bytes() == data  # the source file is left alone


def test_open_and_size_read_an_object_without_loading_it_whole(store):
    digest, data = blob("streamed out")
    store.put(digest, data)
    assert store.size(digest) == len(data)
    with store.open(digest) as handle:
        assert handle.read(8) + handle.read() == data


def test_delete_removes_only_that_object(store):
    (kept, kept_data), (gone, gone_data) = blob("kept"), blob("gone")
    store.put(kept, kept_data)
    store.put(gone, gone_data)
    assert store.delete(gone) is True
    assert store.delete(gone) is False
    assert store.digests() == [kept]


def test_key_at_names_the_keyed_object(store):
    store.put_at("uploads/abc", b"x")
    assert store.fs.cat_file(store.key_at("uploads/abc")) == b"x"
    with pytest.raises(ValueError):
        store.key_at("../uploads/abc")


def test_path_of_maps_the_store_urls_it_hands_out_back_to_paths(store):
    digest = hashlib.sha256(b"where").hexdigest()
    store.put(digest, b"where")
    assert store.fs.cat_file(store.path_of(store.url_for(digest))) == b"where"
    store.put_at("hls/x/master.m3u8", b"#EXTM3U\n")
    assert store.fs.cat_file(store.path_of(store.url_at("hls/x/master.m3u8"))) == b"#EXTM3U\n"
    assert store.path_of("file:///etc/passwd") is None
    assert store.path_of(store.url + "-lookalike/x") is None


def _pieces(data: bytes, size: int = 1 << 20):
    return (data[start:start + size] for start in range(0, len(data), size))


def test_put_stream_then_promote_publishes_by_digest_and_leaves_no_staging(store, tmp_path):
    data = bytes(range(256)) * (5 * 4096 * 4) + b"!"  # 20 MiB and a byte: several S3 parts
    digest = hashlib.sha256(data).hexdigest()
    staged = store.put_stream(_pieces(data))
    assert (staged.size, staged.sha256, staged.store) == (len(data), digest, store.name)
    assert store.digests() == []  # staged is not published
    assert store.read_staged(staged) == data
    assert store.promote(staged) is True
    assert store.staging_keys() == []
    assert store.size(digest) == len(data) and store.get(digest) == data
    again = store.put_stream(_pieces(data))
    assert store.promote(again) is False  # put-if-absent
    assert store.staging_keys() == [] and store.digests() == [digest]
    target = tmp_path / "out.bin"
    store.download(digest, str(target))
    assert target.read_bytes() == data
    with store.readable(digest) as source:  # see test_served_source for what is served
        assert isinstance(source, str) == store.url.startswith("file:")


def test_readable_hands_a_decoder_the_object_in_place_or_served_range_by_range(store):
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data)
    with store.readable(digest) as source:
        if isinstance(source, str):  # a local folder: the object itself, no copy
            assert store.url.startswith("file:") and Path(source).read_bytes() == data
        else:
            assert source.size == len(data)
            with ServedReader(source) as reader:
                reader.seek(len(data) - 1000)
                assert reader.read() == data[-1000:]
                reader.seek(5)
                assert reader.read(2 * 1024 * 1024) == data[5:5 + 2 * 1024 * 1024]
    staged = store.put_stream([data])
    with store.readable_staged(staged) as source:
        reader = open(source, "rb") if isinstance(source, str) else ServedReader(source)
        with reader:
            assert reader.read() == data
    store.discard(staged)


def test_a_failed_stream_leaves_nothing_behind(store):
    def broken():
        yield b"x" * (6 * 1024 * 1024)
        raise ConnectionResetError("the source went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(broken())
    assert store.staging_keys() == [] and store.digests() == []


def test_discard_drops_a_staging_object(store):
    staged = store.put_stream([b"discarded"])
    store.discard(staged)
    store.discard(staged)  # twice is fine
    assert store.staging_keys() == [] and store.digests() == []


def test_sweep_staging_removes_what_a_lost_worker_left_once_it_is_old(store):
    left = store.put_stream([b"a pass whose worker died before promoting it"])
    assert store.sweep_staging(older_than_s=3600) == 0  # young: maybe a live pass
    assert len(store.staging_keys()) == 1 and left.size > 0
    assert store.sweep_staging(older_than_s=-60) == 1  # every leftover is old by then
    assert store.staging_keys() == [] and store.digests() == []


@pytest.mark.parametrize("store", ["s3", "r2"], indirect=True)  # they keep unfinished parts
def test_sweep_staging_aborts_unfinished_multipart_uploads_on_object_stores(store):
    writer = store.writer()
    try:
        writer.write(b"\0" * (STREAM_BLOCK + 1))  # past one part: the multipart upload exists
        bucket, prefix, _ = store.fs.split_path(f"{store.root}/staging/")

        def unfinished() -> list[str]:
            page = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
            return [u["UploadId"] for u in page.get("Uploads", [])]

        assert len(unfinished()) == 1
        # (No "too young to sweep" case here: moto dates every multipart upload 2010.)
        assert store.sweep_staging(older_than_s=-60) == 1
        assert unfinished() == []
    finally:
        writer._handle.closed = True  # the lost worker's file must not finish it when collected


def test_hash_reads_an_object_in_blocks_and_says_what_its_bytes_hash_to(store):
    digest, data = blob("hashed")
    assert store.hash(digest) is None  # absent
    store.put(digest, data)
    assert store.hash(digest) == digest
    large = os.urandom(STREAM_BLOCK + 5)  # more than one block
    large_digest = hashlib.sha256(large).hexdigest()
    store.put(large_digest, large)
    assert store.hash(large_digest) == large_digest
    store.fs.pipe_file(store.key(digest), b"rotten")  # bytes that no longer match their key
    assert store.hash(digest) == hashlib.sha256(b"rotten").hexdigest()


def test_shard_digests_lists_one_two_hex_digit_folder(store):
    digests = [blob(f"shard {i}")[0] for i in range(40)]
    for i, digest in enumerate(digests):
        store.put(digest, f"shard {i}".encode())
    store.put_at("hls/x/master.m3u8", b"#EXTM3U\n")  # outside sha256/: never listed
    for shard in {d[:2] for d in digests} | {"00", "ff"}:
        assert store.shard_digests(shard) == sorted(d for d in digests if d.startswith(shard))
    with pytest.raises(ValueError, match="two lowercase hex digits"):
        store.shard_digests("../")
