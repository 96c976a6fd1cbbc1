"""The farm's own workers are forks of one server that imported the stages, restarts too."""

from __future__ import annotations

import os

import pytest

from cluster.farm import Farm
from tests.conftest import make_settings


def _worker_view() -> dict:
    import os
    import sys
    # The environment the parent started with (glibc read MALLOC_TRIM_THRESHOLD_ then, and
    # a fork never starts again); the worker's own os.environ has the nanny's env on top.
    with open(f"/proc/{os.getppid()}/environ", "rb") as started_with:
        parent_env = dict(entry.decode().partition("=")[::2]
                          for entry in started_with.read().split(b"\0") if entry)
    return {"stages_imported": "cluster.tasks" in sys.modules, "parent": os.getppid(),
            "parent_trim": parent_env.get("MALLOC_TRIM_THRESHOLD_"),
            "hash_seed": hash("mediafarm")}


def _views(farm: Farm) -> list[dict]:
    return list(farm.client.run(_worker_view).values())


@pytest.mark.slow
def test_own_cluster_workers_are_forks_with_the_stages_imported_restarts_included(
        tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url, "tcp://127.0.0.1:9")
    with Farm(settings, n_workers=2) as farm:
        started = _views(farm)
        farm.client.restart(timeout=120)
        restarted = _views(farm)
    for views in (started, restarted):
        assert len(views) == 2, views
        # Before any task ran: the server imported the stage modules for them.
        assert all(view["stages_imported"] for view in views), views
        # Their parent is the fork server, not this process (whose nannies spawned them before).
        assert {view["parent"] for view in views} != {os.getpid()}, views
        assert len({view["parent"] for view in views}) == 1, views
        # What Dask's nanny sets before a worker process starts reached the server's forks.
        assert {view["parent_trim"] for view in views} == {"65536"}, views
        assert len({view["hash_seed"] for view in views}) == 1, views
    assert started[0]["hash_seed"] == restarted[0]["hash_seed"]
