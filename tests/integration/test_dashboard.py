"""The Dask dashboard of a farm's own cluster: its link works, and since it shows call stacks
and logs without a login, it listens on loopback unless a deployment says otherwise."""

from __future__ import annotations

import dataclasses
import urllib.request
from urllib.parse import urlsplit

import psutil
import pytest

from cluster.farm import Farm
from tests.conftest import make_settings


def _listening_hosts(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.mark.slow
def test_own_cluster_dashboard_listens_on_loopback_only(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url, "tcp://127.0.0.1:9")
    with Farm(settings, n_workers=1) as farm:
        port = urlsplit(farm.dashboard_link).port
        hosts = _listening_hosts(port)
        # The link every command prints opens the dashboard, not "Dask needs bokeh".
        with urllib.request.urlopen(farm.dashboard_link, timeout=60) as answer:
            page = answer.read().decode()
    assert hosts == {"127.0.0.1"}, f"the dashboard listens on {hosts}"
    assert "Dask Diagnostic UI" in page and "needs bokeh" not in page, page[:500]


@pytest.mark.slow
def test_a_deployment_can_expose_the_dashboard(tmp_path, sqlite_url):
    settings = dataclasses.replace(make_settings(tmp_path, sqlite_url, "tcp://127.0.0.1:9"),
                                   dashboard_address="0.0.0.0:0")
    with Farm(settings, n_workers=1) as farm:
        hosts = _listening_hosts(urlsplit(farm.dashboard_link).port)
    assert "0.0.0.0" in hosts or "::" in hosts, f"the dashboard listens on {hosts}"
