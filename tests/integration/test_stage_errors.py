"""How the stage tasks end an asset on an exception no stage expected: retryable or not."""

from __future__ import annotations

import pytest

from catalog import Catalog
from cluster import recorder
from cluster.tasks import Carry, Job, _run, validate_task
from pipelines.outcome import Status
from pipelines.recipe import DEFAULT_RECIPE
from tests.conftest import make_settings
from tests.corpus.generate import png_with_latin1_text


@pytest.fixture
def job(tmp_path, sqlite_url) -> Job:
    settings = make_settings(tmp_path / "data", sqlite_url, "tcp://127.0.0.1:9")
    return Job("asset-1", 1, "file:///nowhere", DEFAULT_RECIPE, settings)


def run(job: Job, stage: str, body) -> tuple[Carry, list]:
    with recorder.buffered(Catalog(job.settings.catalog_url)) as writes:
        return _run(stage, job, Carry(), body), writes.stages


def raising(error: BaseException):
    def body() -> Carry:
        raise error
    return body


def test_a_decode_error_is_failed_and_not_retryable(job):
    error = UnicodeDecodeError("utf-8", b"Gr\xf6\xdfe", 2, 3, "invalid start byte")
    carry, stages = run(job, "validate", raising(error))
    stop = carry.stop
    assert (stop.status, stop.reason, stop.retryable) == (Status.FAILED, "internal_error", False)
    assert stop.message.startswith("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xf6")
    assert (stages[0].status, stages[0].error_class) == ("failed", "UnicodeDecodeError")


def test_a_connection_error_is_retryable(job):
    carry, _ = run(job, "hash", raising(ConnectionResetError(104, "Connection reset by peer")))
    assert (carry.stop.reason, carry.stop.retryable) == ("internal_error", True)


def test_an_image_whose_metadata_raised_passes_validate(job):
    with recorder.buffered(Catalog(job.settings.catalog_url)):
        carry = validate_task(job, Carry(data=png_with_latin1_text()))
    assert carry.stop is None
    assert (carry.validated.kind, carry.validated.metadata["width"]) == ("image", 64)
