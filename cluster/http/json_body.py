"""A request's JSON object, parsed so that no input can make the server fail (a 5xx).

The standard parser is kept (it is fast and strict); what it lets through that the rest of
the server cannot take is refused here, as the client's mistake: nesting deep enough to
exhaust the parser's recursion, NUL characters (PostgreSQL refuses them in text) and lone
surrogates (``"\\ud800"`` is valid JSON, but no UTF-8 driver, path or digest can encode it).
"""

from __future__ import annotations

import json

from cluster.http.errors import ApiError

MAX_DEPTH = 32  # the API's bodies nest a few levels (a recipe's presets); far more is an attack


def parse_object(body: bytes) -> dict:
    """The JSON object in ``body``: 400 if it is not JSON, 422 if it is not an acceptable object."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    _check(data, 0)
    return data


def _check(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ApiError(422, "invalid_body", f"the body nests more than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ApiError(422, "invalid_body", "text in the body must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_body",
                       "text in the body must not contain lone surrogates (\\ud800-\\udfff)") from None
