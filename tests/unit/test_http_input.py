"""The HTTP endpoint's pure input handling: JSON bodies, token shapes, buckets, trusted proxies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.http.auth import RateLimiter, authenticate
from cluster.http.errors import ApiError
from cluster.http.json_body import MAX_DEPTH, parse_object
from cluster.http.service import load_api_config, public_base_url
from cluster.http.slow_clients import TrustedProxies
from tests.conftest import make_settings

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(st.characters(categories=["Cs", "Cc", "L", "N", "S"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=30)

_bodies = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda n, opener: opener * n, st.integers(1, 40000),
              st.sampled_from([b"[", b'{"a":', b'[{"b":'])),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)


@given(_bodies)
@settings(max_examples=400, deadline=None, database=None)
def test_any_body_is_a_clean_object_or_a_4xx(body):
    try:
        data = parse_object(body)
    except ApiError as exc:
        assert exc.status in (400, 422) and exc.code in ("invalid_json", "invalid_body")
        return
    assert isinstance(data, dict)
    # What comes out can be stored and digested: UTF-8 without NUL, shallow.
    text = json.dumps(data, ensure_ascii=False)
    text.encode("utf-8")
    assert "\x00" not in text


@pytest.mark.parametrize(("body", "status"), [
    (b"[" * 20000, 400), (b'{"a":' * 5000, 400), (b'{"s": "\\ud800"}', 422),
    (b'{"\\udfff": 1}', 422), (b'{"s": ["x\\u0000"]}', 422), (b"\xff", 400), (b"[]", 422),
    (b'{"a":' * (MAX_DEPTH + 2) + b"1" + b"}" * (MAX_DEPTH + 2), 422),
])
def test_known_bad_bodies(body, status):
    with pytest.raises(ApiError) as caught:
        parse_object(body)
    assert caught.value.status == status


def test_tokens_create_token_cannot_have_made_need_no_catalog():
    # No engine at all: a query would fail, so None proves none was made.
    for token in ["mf_short", "mf_" + "a" * 42, "mf_" + "a" * 44, "mf_" + "é" * 43,
                  "xx_" + "a" * 43, "mf_" + "a" * 42 + "\ud800"]:
        assert authenticate(None, token) is None  # type: ignore[arg-type]


def test_wait_tells_without_taking():
    limiter = RateLimiter(rate=0.5, burst=2)
    assert [limiter.wait("a", now=0) for _ in range(5)] == [0] * 5
    assert limiter.take("a", now=0) == limiter.take("a", now=0) == 0
    assert limiter.wait("a", now=0) == 2 and limiter.take("a", now=0) == 2
    assert limiter.wait("a", now=2) == 0


def test_full_buckets_are_pruned():
    limiter = RateLimiter(rate=1, burst=1)
    limiter.PRUNE_AT = limiter._prune_at = 10
    for i in range(10):
        limiter.take(str(i), now=0)
    limiter.take("late", now=100)  # every earlier bucket has refilled by now
    assert set(limiter._buckets) == {"late"}


def test_trusted_proxies():
    trusted = TrustedProxies(["10.0.0.0/8", " 127.0.0.1", ""])
    assert "10.1.2.3" in trusted and "127.0.0.1" in trusted
    assert "127.0.0.2" not in trusted and "unix:sock" not in trusted and None not in trusted
    assert "::1" in TrustedProxies(["*"]) and not TrustedProxies([])


def test_the_api_settings_read_from_the_environment():
    settings = make_settings(Path("/x"), "", "")
    config = load_api_config(settings, {
        "MEDIAFARM_API_PUBLIC_URL": "https://media.example.com/farm/",
        "MEDIAFARM_API_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16",
        "MEDIAFARM_API_HEADER_TIMEOUT": "3", "MEDIAFARM_API_BODY_TIMEOUT": "4.5",
        "MEDIAFARM_API_MAX_UNAUTHENTICATED_CONNECTIONS": "7",
        "MEDIAFARM_API_CLIENT_RATE_LIMIT": "0.5", "MEDIAFARM_API_CLIENT_RATE_BURST": "9"})
    assert config.public_url == "https://media.example.com/farm"
    assert config.trusted_proxies == ("10.0.0.5", "10.1.0.0/16")
    assert (config.header_timeout_s, config.body_timeout_s) == (3, 4.5)
    assert config.max_unauthenticated_connections == 7
    assert (config.client_rate_limit, config.client_rate_burst) == (0.5, 9)
    defaults = load_api_config(settings, {})
    assert defaults.public_url is None and defaults.trusted_proxies == ()
    for bad in ["media.example.com", "ftp://x", "https://u:p@x", "https://x/?a=1", "https://x/#f"]:
        with pytest.raises(ValueError):
            public_base_url(bad)
