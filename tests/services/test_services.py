"""Prove the test service helpers start real clamd, PostgreSQL and moto S3."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.exceptions
import psycopg
import pytest
from sqlalchemy import create_engine, text

import cluster.cli.local_clamd as local_clamd
from cluster.cli.local_clamd import LocalClamd, start_clamd

from .postgres import THROWAWAY_ENV, URL_ENV, _conninfo, scratch_database, server_url
from .s3 import DUMMY_KEY, DUMMY_SECRET, REGION, make_bucket, s3_filesystem, start_moto

SIGNATURES = Path(__file__).resolve().parent.parent / "signatures"
# The standard 68-byte EICAR anti-virus test string, split so this file is not itself flagged.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"MEDIAFARM-TEST-MALWARE-MARKER"


def instream(port: int, data: bytes, chunk: int = 8192) -> str:
    """Scan ``data`` with clamd's INSTREAM command and return its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"zINSTREAM\0")
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            sock.sendall(struct.pack(">I", len(piece)) + piece)
        sock.sendall(struct.pack(">I", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            received = sock.recv(4096)
            if not received:
                break
            reply += received
    return reply.rstrip(b"\0").decode()


@pytest.fixture
def clamd(tmp_path: Path) -> Iterator[LocalClamd]:
    """A clamd loaded with only the project's test signatures."""
    daemon = start_clamd(SIGNATURES, tmp_path / "clamd")
    yield daemon
    daemon.stop()


def test_clamd_flags_eicar_and_marker_and_passes_clean(clamd: LocalClamd) -> None:
    assert len(EICAR) == 68
    assert instream(clamd.port, EICAR) == "stream: Eicar-Test-Signature.UNOFFICIAL FOUND"
    assert instream(clamd.port, b"header " + MARKER + b" trailer") == "stream: Mediafarm.Test.Marker-1.UNOFFICIAL FOUND"
    assert instream(clamd.port, b"just an ordinary payload\n" * 1000) == "stream: OK"


def test_clamd_stop_and_start_again_on_same_port(clamd: LocalClamd) -> None:
    url = clamd.url
    clamd.stop()
    clamd.stop()  # idempotent
    assert clamd.process.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", clamd.port), timeout=2).close()
    clamd.start_again()
    assert clamd.url == url
    assert clamd.process.poll() is None
    assert instream(clamd.port, EICAR) == "stream: Eicar-Test-Signature.UNOFFICIAL FOUND"


def test_start_clamd_reports_bad_database(tmp_path: Path) -> None:
    empty = tmp_path / "no-signatures"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="clamd"):
        start_clamd(empty, tmp_path / "clamd", timeout=30)


def test_start_clamd_without_clamd_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_clamd, "find_clamd", lambda: None)
    with pytest.raises(RuntimeError) as raised:
        start_clamd(SIGNATURES, tmp_path)
    assert str(raised.value) == (
        "install Debian's clamav-daemon (`apt-get install clamav-daemon`) or conda-forge's clamav"
    )


def _check_scratch_database(base_url: str) -> None:
    """Create a scratch DB, query it through SQLAlchemy, and check it is dropped afterwards."""
    with scratch_database(base_url) as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("mediafarm_test_")
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("select 1")).scalar_one() == 1
                assert conn.execute(text("select current_database()")).scalar_one() == name
        finally:
            engine.dispose()
        # A connection left open must not stop the drop.
        leftover = psycopg.connect(_conninfo(url))
    leftover.close()
    with psycopg.connect(_conninfo(base_url)) as conn:
        found = conn.execute("select count(*) from pg_database where datname = %s", (name,)).fetchone()
    assert found == (0,)


def test_server_url_and_scratch_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THROWAWAY_ENV, raising=False)
    with server_url() as base_url:
        assert base_url.startswith("postgresql+psycopg://")
        _check_scratch_database(base_url)


def test_database_url_env_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, "postgresql://someone@db.example:6543/postgres")
    with server_url() as base_url:
        assert base_url == "postgresql+psycopg://someone@db.example:6543/postgres"


@pytest.mark.slow
def test_throwaway_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv(THROWAWAY_ENV, "1")
    with server_url() as base_url:
        assert ":5432/" not in base_url
        _check_scratch_database(base_url)
        conninfo = _conninfo(base_url)
    # The throwaway server is stopped once the context exits.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo, connect_timeout=2)


def test_moto_bucket_round_trip() -> None:
    endpoint = start_moto()
    try:
        assert endpoint.url.startswith("http://127.0.0.1:")
        make_bucket(endpoint.url, "mediafarm-test")
        make_bucket(endpoint.url, "mediafarm-test")  # idempotent
        fs = s3_filesystem(endpoint.url)
        fs.pipe("mediafarm-test/dir/blob.bin", b"\x00payload\xff")
        assert s3_filesystem(endpoint.url).cat("mediafarm-test/dir/blob.bin") == b"\x00payload\xff"
        assert fs.ls("mediafarm-test/dir") == ["mediafarm-test/dir/blob.bin"]
    finally:
        endpoint.stop()


def test_moto_ranged_gets_answer_as_s3_does() -> None:
    """The harness reads only the range on a ranged GET (tests/services/s3.py ``_Window``):
    the bytes, the status and Content-Range must be S3's for every kind of range."""
    endpoint = start_moto()
    try:
        make_bucket(endpoint.url, "mediafarm-ranges")
        fs = s3_filesystem(endpoint.url)
        data = os.urandom(6 * 1024 * 1024 + 7)  # past moto's in-memory spool: read from its file
        fs.pipe("mediafarm-ranges/blob", data)
        client = boto3.client("s3", endpoint_url=endpoint.url, region_name=REGION,
                              aws_access_key_id=DUMMY_KEY, aws_secret_access_key=DUMMY_SECRET)

        def get(range_: str) -> tuple[int, str | None, bytes]:
            answer = client.get_object(Bucket="mediafarm-ranges", Key="blob", Range=range_)
            return (answer["ResponseMetadata"]["HTTPStatusCode"], answer.get("ContentRange"),
                    answer["Body"].read())

        assert fs.cat_file("mediafarm-ranges/blob", start=5, end=10) == data[5:10]
        assert fs.cat_file("mediafarm-ranges/blob", start=len(data) - 3) == data[-3:]
        assert fs.cat("mediafarm-ranges/blob") == data
        assert get("bytes=1000-2000099") == (206, f"bytes 1000-2000099/{len(data)}",
                                             data[1000:2000100])
        assert get("bytes=-4") == (206, f"bytes {len(data) - 4}-{len(data) - 1}/{len(data)}",
                                   data[-4:])
        assert get(f"bytes={len(data) - 9}-")[2] == data[-9:]
        assert get("bytes=0-1,5-6")[2] == data  # S3 answers a multi-range with the whole object
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            get(f"bytes={len(data) + 10}-")
        assert refused.value.response["Error"]["Code"] == "InvalidRange"
    finally:
        endpoint.stop()
