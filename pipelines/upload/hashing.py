"""Streaming SHA-256: the digest that addresses every blob."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import BinaryIO

CHUNK = 1 << 20


def iter_chunks(data: bytes | BinaryIO, size: int = CHUNK) -> Iterable[bytes]:
    """Yield ``data`` in chunks, whether it is bytes in memory or an open file."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for start in range(0, len(view), size):
            yield view[start:start + size].tobytes()
        return
    while chunk := data.read(size):
        yield chunk


def sha256_hex(data: bytes | BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter_chunks(data):
        digest.update(chunk)
    return digest.hexdigest()
