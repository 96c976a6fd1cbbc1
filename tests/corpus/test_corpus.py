"""Every hostile or broken input ends with the status and reason it must get, and harms nothing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from catalog import upgrade
from catalog.models import StageRun
from cluster.farm import Farm
from cluster.cli.local_clamd import start_clamd
from tests.conftest import SIGNATURES, make_settings
from tests.services.postgres import scratch_database
from tests.corpus.generate import (CAMERA_REFERENCES, CASES, CLAMD_STREAM_LIMIT, CORPUS_LIMITS,
                                   SCRIPT, write_corpus)
from tests.corpus.pictures import assert_same_picture, decoded

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclasses.dataclass
class CorpusRun:
    results: dict[str, dict]
    farm: Farm
    workers_before: dict
    workers_after: dict
    files: Path


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, pg_server, dask_client):
    root = tmp_path_factory.mktemp("corpus")
    cases = write_corpus(root / "files")
    clamd = start_clamd(SIGNATURES, root / "clamd", stream_max_length=CLAMD_STREAM_LIMIT)
    try:
        with scratch_database(pg_server) as url:
            upgrade(url)
            settings = dataclasses.replace(make_settings(root / "data", url, clamd.url),
                                           limits=CORPUS_LIMITS)
            with Farm(settings, client=dask_client) as farm:
                before = _workers(dask_client)
                results = farm.ingest([str(root / "files" / name) for name in cases]).wait()
                yield CorpusRun({Path(r["source"]).name: r for r in results}, farm, before,
                                _workers(dask_client), root / "files")
    finally:
        clamd.stop()


def _workers(client) -> dict:
    return client.run(os.getpid)  # {worker address: process id}; a restarted worker changes both


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_gets_its_status_and_reason(corpus_run, case):
    result = corpus_run.results[case.name]
    assert (result["status"], result["reason"]) in {(case.status, r) for r in case.reasons}, result
    if case.status == "rejected":
        assert result["message"]  # a sentence a person can read
        assert result["renditions"] == []


def test_no_worker_died(corpus_run):
    assert corpus_run.workers_after == corpus_run.workers_before


def test_only_accepted_files_reach_the_renditions_store(corpus_run):
    published = {r["sha256"] for result in corpus_run.results.values()
                 for r in result["renditions"]}
    assert set(corpus_run.farm.stores["renditions"].digests()) == published
    for digest in published:
        data = corpus_run.farm.stores["renditions"].get(digest)
        assert SCRIPT not in data and b"SecretCam" not in data and b"Private Person" not in data


def test_only_files_that_passed_scan_and_validate_reach_the_originals_store(corpus_run):
    with corpus_run.farm.catalog.engine.connect() as conn:
        hashed = {details["sha256"] for details in conn.execute(select(StageRun.details).where(
            StageRun.stage == "hash", StageRun.status == "ok")).scalars()}
    assert set(corpus_run.farm.stores["originals"].digests()) == hashed
    # Truncated JPEG and PNG headers still read, so they are hashed and kept; decode rejects them.
    expected = {"truncated.jpg", "truncated.png", "truncated.heic"} | {
        c.name for c in CASES if c.status == "ready"}
    assert {name for name, r in corpus_run.results.items() if r["sha256"]} == expected


@pytest.mark.parametrize("name", CAMERA_REFERENCES)
def test_what_phones_and_cameras_make_renders_the_right_picture(corpus_run, name):
    """Every default preset of every class: the producing library's decode, upright, shrunk."""
    result = corpus_run.results[name]
    assert result["status"] == "ready" and len(result["renditions"]) == 4, result
    reference = CAMERA_REFERENCES[name]((corpus_run.files / name).read_bytes())
    for rendition in result["renditions"]:
        pixels = decoded(corpus_run.farm.stores["renditions"].get(rendition["sha256"]))
        assert pixels.shape[:2] == (rendition["height"], rendition["width"])
        if rendition["preset"] == "thumb":  # cover: the centre of the picture, square
            assert pixels.shape[:2] == (150, 150)
            continue
        assert_same_picture(pixels, reference)


def test_infected_files_go_to_quarantine_only(corpus_run):
    infected = [r for r in corpus_run.results.values() if r["reason"] == "infected"]
    assert len(infected) == 3
    assert len(corpus_run.farm.stores["quarantine"].digests()) == 3
