"""Completion webhooks' pure rules: allowed callback URLs, signatures, payloads, retries."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cluster.http.webhook_rules import (NotAllowed, check_callback_url, delivered, next_delay,
                                        payload, signature, verify)


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]
    return resolve


PUBLIC = resolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07::1"],
                   "inside.example.com": ["93.184.215.14", "10.0.0.5"],
                   "localhost": ["127.0.0.1", "::1"], "meta.example.com": ["169.254.169.254"]})


def test_public_hosts_are_allowed_when_no_list_is_set():
    url = "https://hooks.example.com/mediafarm?x=1"
    assert check_callback_url(url, (), PUBLIC) == url


@pytest.mark.parametrize("url", [
    "http://localhost:8080/hook", "http://127.0.0.1/hook", "http://[::1]/hook",
    "http://10.1.2.3/hook", "http://192.168.0.1/", "http://169.254.169.254/latest/meta-data",
    "http://meta.example.com/", "http://inside.example.com/",  # one private address is enough
    "http://nowhere.example.com/",  # does not resolve
    "ftp://hooks.example.com/", "file:///etc/passwd", "gopher://hooks.example.com/",
    "https://user:pw@hooks.example.com/", "https://hooks.example.com/#x", "https:///nohost",
    "http://hooks.example.com:99999/", "http://hooks.example.com/\nHost: x", "", None, 42,
    "https://hooks.example.com/" + "a" * 2001,
])
def test_everything_else_is_refused_by_default(url):
    with pytest.raises(NotAllowed):
        check_callback_url(url, (), PUBLIC)


def test_an_allow_list_names_the_only_hosts_and_lets_them_be_loopback():
    allowed = ("127.0.0.1", "Hooks.Example.com")
    assert check_callback_url("http://127.0.0.1:9000/h", allowed, PUBLIC)
    assert check_callback_url("https://hooks.example.com./h", allowed, PUBLIC)
    for url in ("http://localhost:9000/h", "http://127.0.0.2/h", "http://10.0.0.1/h",
                "https://other.example.com/"):
        with pytest.raises(NotAllowed):
            check_callback_url(url, allowed, PUBLIC)


def test_a_signature_verifies_with_its_secret_body_and_a_fresh_time_only():
    body = b'{"event":"asset.ready"}'
    header = signature("whsec_a", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("whsec_a", header, body, now=1_700_000_100)
    assert not verify("whsec_b", header, body, now=1_700_000_100)
    assert not verify("whsec_a", header, body + b" ", now=1_700_000_100)
    assert not verify("whsec_a", header, body, now=1_700_001_000)  # too old
    assert not verify("whsec_a", header.replace("t=1700000000", "t=1700000900"), body,
                      now=1_700_000_900)  # a new time needs a new HMAC
    assert not verify("whsec_a", "v1=abc", body, now=1_700_000_000)


def test_the_payload_says_what_ended_and_how():
    ended = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    event, body = payload({"id": "d1", "asset_id": "a1", "job_id": None,
                           "subject_status": "rejected", "reason": "infected",
                           "renditions": 0, "sha256": None, "ended_at": ended})
    assert event == "asset.rejected"
    assert json.loads(body) == {"id": "d1", "event": "asset.rejected", "asset_id": "a1",
                                "job_id": None, "status": "rejected", "reason": "infected",
                                "renditions": 0, "sha256": None, "at": ended.isoformat()}
    event, _ = payload({"id": "d2", "asset_id": None, "job_id": "j1", "subject_status": "finished",
                        "reason": None, "renditions": None, "sha256": None, "ended_at": ended})
    assert event == "job.finished"


def test_only_2xx_is_delivered_and_retries_back_off():
    assert delivered(200) and delivered(204)
    assert not any(delivered(code) for code in (301, 302, 307, 308, 400, 404, 500, 503))
    assert [next_delay(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert next_delay(30, 30) == 3600


def test_the_receivers_check_in_the_docs_verifies_what_the_farm_signs():
    text = (Path(__file__).parents[2] / "docs" / "http.md").read_text()
    snippet = re.search(r"## Webhooks.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - our own documentation
    body = b'{"event":"asset.ready"}'
    now = int(time.time())
    assert namespace["verified"]("whsec_a", signature("whsec_a", body, now), body)
    assert not namespace["verified"]("whsec_a", signature("whsec_b", body, now), body)
    assert not namespace["verified"]("whsec_a", signature("whsec_a", body, now - 3600), body)


def _form(*parts: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = b"Content-Type: image/jpeg\r\n" if filename else b""
        body += (b"--B\r\nContent-Disposition: " + disposition.encode() + b"\r\n" + kind
                 + b"\r\n" + data + b"\r\n")
    return body + b"--B--\r\n"


def _receive(body: bytes, tmp_path):
    import asyncio

    from cluster.http.upload_store import receive_multipart

    async def chunks():
        yield body

    return asyncio.run(receive_multipart(chunks(), "multipart/form-data; boundary=B",
                                         max_bytes=1 << 20, allowed_types={"image/jpeg"},
                                         spool_dir=str(tmp_path)))


def test_the_upload_form_takes_a_callback_url_beside_the_file(tmp_path):
    from cluster.http.errors import ApiError

    for parts in ([("callback_url", None, b"http://127.0.0.1:9/h"), ("file", "a.jpg", b"jpeg")],
                  [("file", "a.jpg", b"jpeg"), ("callback_url", None, b"http://127.0.0.1:9/h")]):
        received = _receive(_form(*parts), tmp_path)
        assert received.callback_url == "http://127.0.0.1:9/h" and received.size == 4
        Path(received.path).unlink()
    plain = _receive(_form(("file", "a.jpg", b"jpeg")), tmp_path)
    assert plain.callback_url is None
    Path(plain.path).unlink()
    for bad in ([("callback_url", None, b"x" * 2001), ("file", "a.jpg", b"jpeg")],
                [("callback_url", None, b"a"), ("callback_url", None, b"b"),
                 ("file", "a.jpg", b"jpeg")],
                [("callback_url", "h.txt", b"a"), ("file", "a.jpg", b"jpeg")],
                [("other", None, b"a"), ("file", "a.jpg", b"jpeg")]):
        with pytest.raises(ApiError) as refused:
            _receive(_form(*bad), tmp_path)
        assert refused.value.status == 422
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mediafarm-upload-")] == []
