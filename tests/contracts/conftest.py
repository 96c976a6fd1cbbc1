"""Two real moto S3 servers on loopback: one stands for AWS S3, the other for Cloudflare R2."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.s3 import MotoEndpoint, start_moto


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[MotoEndpoint]:
    endpoint = start_moto()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def r2_endpoint() -> Iterator[MotoEndpoint]:
    endpoint = start_moto()
    yield endpoint
    endpoint.stop()
