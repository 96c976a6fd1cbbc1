"""Re-scans end to end: a signature added to clamd's database turns an earlier ready asset
into ``rejected: infected``, its renditions withdrawn over HTTP and its original quarantined.

A real clamd of the test's own (a copy of tests/signatures), a real ``mediafarm serve``
process on the suite's Dask cluster, PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone

import httpx
import pytest
from sqlalchemy import select

from catalog import connect
from catalog.models import StageRun
from cluster.cli.local_clamd import start_clamd
from cluster.cli.main import main
from cluster.cli.samples import scene
from cluster.farm import Farm
from cluster.rescan import database_version
from tests.conftest import SIGNATURES, make_settings
from tests.services.api_server import Deployment, settings_env, start_api_server, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIGNATURE = "Mediafarm.Rescan.Test-1"


def _photo(seed: int) -> bytes:
    return scene(320, 240, seed).jpegsave_buffer(Q=85)


@pytest.fixture
def deployment(tmp_path, pg_url, dask_client):
    signatures = tmp_path / "signatures"
    shutil.copytree(SIGNATURES, signatures)
    daemon = start_clamd(signatures, tmp_path / "clamd")
    settings = make_settings(tmp_path / "data", pg_url, daemon.url)
    server = start_api_server(settings, tmp_path, scheduler=dask_client.scheduler.address)
    try:
        yield Deployment(server, settings), daemon, signatures
    finally:
        server.stop()
        daemon.stop()


def _upload(http: httpx.Client, api: Deployment, headers: dict, data: bytes, name: str) -> dict:
    answer = http.post(f"{api.url}/v1/assets", headers=headers,
                       files={"file": (name, data, "image/jpeg")})
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], headers)
    assert asset["status"] == "ready", asset
    return {**asset, "status_url": answer.json()["status_url"]}


def test_a_new_signature_rejects_an_earlier_ready_asset(deployment, dask_client, monkeypatch,
                                                        capsys):
    api, daemon, signatures = deployment
    alice = api.token("alice")
    with httpx.Client(timeout=30, trust_env=False) as http:
        doomed, kept, lost = (_upload(http, api, alice, _photo(seed), f"photo-{seed}.jpg")
                              for seed in (41, 42, 43))
        thumbs = {asset["id"]: next(r["url"] for r in asset["renditions"]
                                    if r["preset"] == "thumb") for asset in (doomed, kept)}
        assert all(http.get(url, headers=alice).status_code == 200 for url in thumbs.values())
        originals, quarantine = api.store("originals"), api.store("quarantine")
        originals.delete(lost["sha256"])  # a store that lost an object: reported, not a crash

        # The database learns the first photo's bytes (a SHA-256 hash signature), and clamd
        # is restarted on it, as after freshclam.
        data = originals.get(doomed["sha256"])
        assert hashlib.sha256(data).hexdigest() == doomed["sha256"]
        (signatures / "rescan.hsb").write_text(f"{doomed['sha256']}:{len(data)}:{SIGNATURE}:73\n")
        daemon.start_again()

        with Farm(api.settings, client=dask_client) as farm:
            with pytest.raises(ValueError, match="--signatures DIR"):
                farm.rescan()  # a custom database has no version of its own
            report = farm.rescan(signatures=str(signatures))
        version = database_version(signatures)
        assert report["signatures_version"] == version
        assert report["counts"] == {"infected": 1, "clean": 1, "missing": 1}, report
        [found] = report["infected"]
        assert found["assets"] == [doomed["id"]]
        assert found["details"]["signature"] == f"{SIGNATURE}.UNOFFICIAL"
        assert [m["assets"] for m in report["missing"]] == [[lost["id"]]]

        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        after = http.get(doomed["status_url"], headers=alice).json()
        assert (after["status"], after["reason"]) == ("rejected", "infected")
        assert SIGNATURE in after["message"] and today in after["message"]
        assert after["renditions"] == []
        assert http.get(thumbs[doomed["id"]], headers=alice).status_code == 404
        assert not originals.exists(doomed["sha256"])
        assert quarantine.get(doomed["sha256"]) == data
        # The other assets stay as they were: one clean, one whose original is gone.
        assert http.get(kept["status_url"], headers=alice).json()["status"] == "ready"
        assert http.get(thumbs[kept["id"]], headers=alice).status_code == 200
        assert http.get(lost["status_url"], headers=alice).json()["status"] == "ready"

    with connect(api.settings.catalog_url).connect() as conn:
        rows = {(r.asset_id, r.status, r.reason): r.details for r in conn.execute(
            select(StageRun).where(StageRun.stage == "rescan"))}
    infected = rows[doomed["id"], "rejected", "infected"]
    assert infected["signature"] == f"{SIGNATURE}.UNOFFICIAL"
    assert infected["signatures_version"] == version and infected["engine"].startswith("ClamAV")
    assert infected["found_at"].startswith(today)
    assert rows[kept["id"], "ok", None]["signatures_version"] == version
    assert (lost["id"], "failed", "original_missing") in rows

    # Again, through the command: nothing left to scan but the missing original, which is
    # reported again (exit status 1), never taken for clean.
    for name, value in settings_env(api.settings).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["rescan", "--scheduler", dask_client.scheduler.address,
                 "--signatures", str(signatures), "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["counts"] == {"missing": 1} and again["infected"] == []
