"""The scan stage against a real clamd: verdicts, limits, and failing closed."""

from __future__ import annotations

import os
import socket

import pytest

from cluster.cli.local_clamd import start_clamd
from cluster.cli.samples import EICAR
from pipelines.outcome import Failed, Rejected
from pipelines.upload import scan as scan_module
from pipelines.upload.scan import CHUNK, ClamdScanner, scan
from tests.conftest import SIGNATURES

MARKER = b"MEDIAFARM-TEST-MALWARE-MARKER"


def test_clean_bytes_pass_with_engine_version_recorded(clamd):
    verdict = scan(b"an ordinary file", ClamdScanner(clamd.url))
    assert verdict.clean and verdict.signature is None
    assert verdict.engine.startswith("ClamAV ")
    assert verdict.signatures_version  # "custom" for the project's own database


def test_the_version_answer_is_reused_within_its_ttl_then_asked_again(tmp_path, monkeypatch):
    server = start_clamd(SIGNATURES, tmp_path / "clamd")
    scanner = ClamdScanner(server.url, timeout=2)
    monkeypatch.setattr(scan_module, "VERSION_TTL_S", 3600)
    try:
        first = scanner.version()
    finally:
        server.stop()
    assert scanner.version() == first  # from memory: no connection to the stopped clamd
    monkeypatch.setattr(scan_module, "VERSION_TTL_S", 0)
    with pytest.raises(Failed) as caught:  # asked again, and it fails closed
        scanner.version()
    assert caught.value.reason == "scanner_unavailable"


def test_eicar_is_rejected_as_infected_with_its_signature(clamd):
    with pytest.raises(Rejected) as caught:
        scan(EICAR, ClamdScanner(clamd.url))
    assert caught.value.reason == "infected"
    assert caught.value.details["signature"].startswith("Eicar-Test-Signature")


def test_project_signature_is_found_past_the_first_chunk(clamd):
    data = os.urandom(3 * CHUNK) + MARKER + os.urandom(1000)
    with pytest.raises(Rejected) as caught:
        scan(data, ClamdScanner(clamd.url))
    assert caught.value.details["signature"].startswith("Mediafarm.Test.Marker-1")


def test_large_clean_stream_is_sent_whole(clamd):
    assert scan(os.urandom(8 * CHUNK + 17), ClamdScanner(clamd.url)).clean


def test_unreachable_scanner_fails_closed_and_retryable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(Failed) as caught:
        scan(b"anything", ClamdScanner(f"tcp://127.0.0.1:{port}", timeout=2))
    assert caught.value.reason == "scanner_unavailable"
    assert caught.value.retryable


def test_a_scanner_that_never_answers_times_out_and_fails_closed():
    with socket.socket() as silent:  # accepts into its backlog, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(Failed) as caught:
            scan(b"anything", ClamdScanner(url, timeout=0.5))
    assert caught.value.reason == "scanner_unavailable" and caught.value.retryable


PAYLOAD = b"an ordinary file"


class _StopsAfterAnOddAnswer(ClamdScanner):
    """A real clamd's scan whose answer is replaced by an odd one, as a clamd shutting
    down mid-scan can give, with the clamd then stopped (or not) before the verdict."""

    def __init__(self, server, stop: bool) -> None:
        super().__init__(server.url)
        self.server, self.stop = server, stop

    def instream(self, data) -> str:
        answer = super().instream(data)
        if data != PAYLOAD:  # the farm's canaries, scanned first
            return answer
        if self.stop:
            self.server.stop()
        return "stream: Interrupted ERROR"


@pytest.mark.parametrize("stop, reason", [(True, "scanner_unavailable"), (False, "scanner_error")])
def test_an_odd_answer_from_a_clamd_that_then_stops_is_an_outage(tmp_path, stop, reason):
    server = start_clamd(SIGNATURES, tmp_path / "clamd")
    try:
        with pytest.raises(Failed) as caught:
            scan(PAYLOAD, _StopsAfterAnOddAnswer(server, stop))
    finally:
        server.stop()
    assert caught.value.reason == reason and caught.value.retryable
    assert "Interrupted ERROR" in caught.value.message


@pytest.mark.slow
def test_stream_over_clamd_limit_is_rejected_not_passed(tmp_path):
    small = start_clamd(SIGNATURES, tmp_path, stream_max_length="1M")
    try:
        with pytest.raises(Rejected) as caught:
            scan(os.urandom(3 * 1024 * 1024), ClamdScanner(small.url))
        assert caught.value.reason == "scan_limit_exceeded"
    finally:
        small.stop()


@pytest.mark.slow
def test_file_over_clamd_scan_limits_is_rejected_by_the_heuristic(tmp_path):
    # AlertExceedsMax: clamd reports what it could not scan whole instead of calling it clean.
    limited = start_clamd(SIGNATURES, tmp_path, stream_max_length="20M", max_file_size="1M")
    try:
        with pytest.raises(Rejected) as caught:
            scan(os.urandom(2 * 1024 * 1024), ClamdScanner(limited.url))
        assert caught.value.reason == "scan_limit_exceeded"
        assert "Heuristics.Limits.Exceeded" in caught.value.details["signature"]
    finally:
        limited.stop()


def test_bad_scanner_url_is_a_clear_error():
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        ClamdScanner("http://localhost:3310")
