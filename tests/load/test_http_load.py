"""A bounded load test: 200 concurrent uploads from a second process, over loopback.

The server is ``mediafarm serve`` (PostgreSQL catalog, the suite's Dask
cluster); the load comes from ``tests/load/http_load_client.py`` in a process
of its own. The test asserts outcomes only: every upload accepted, every asset
ends ``ready``. How fast is a benchmark's question (benchmarks/bench_http_load.py,
figures in docs/http.md): on a loaded machine the same work simply takes longer.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import make_settings
from tests.services.api_server import Deployment, start_api_server

pytestmark = [pytest.mark.slow]

UPLOADS = 200
# Only so a server that never finishes cannot hang the suite: far above what 200
# small images take even on a machine with a load average of 25.
OUTCOME_BOUND_S = 1800


@pytest.fixture
def api(tmp_path, pg_url, clamd, dask_client) -> Deployment:
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    server = start_api_server(settings, tmp_path, scheduler=dask_client.scheduler.address,
                              extra_env={"MEDIAFARM_API_RATE_LIMIT": "10000",
                                         "MEDIAFARM_API_RATE_BURST": "10000"})
    yield Deployment(server, settings)
    server.stop()


def test_200_concurrent_uploads_all_reach_a_terminal_status(api):
    token = api.token("load", "submit,read")["Authorization"].removeprefix("Bearer ")
    command = [sys.executable, "-m", "tests.load.http_load_client", "--url", api.url,
               "--token", token, "--count", str(UPLOADS), "--concurrency", str(UPLOADS),
               "--wait", str(OUTCOME_BOUND_S)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=OUTCOME_BOUND_S + 120)
    assert run.returncode in (0, 1), run.stderr
    report = json.loads(run.stdout)
    assert report["upload_statuses"] == {"202": UPLOADS}
    assert report["not_terminal"] == 0, report
    assert report["terminal"] == {"ready": UPLOADS}
