"""Deployment configurations: valid, loaded by the tools that use them, and a cluster by command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import pytest
import yaml
from distributed import Client
from sqlalchemy import select

from catalog import Catalog
from catalog.models import StageRun
from cluster.config import load_settings
from cluster.cli.samples import scene
from cluster.worker_plugin import MediafarmWorkerPlugin, worker_reports

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_jobqueue_config_makes_a_slurm_job_of_single_threaded_workers():
    from dask_jobqueue import SLURMCluster

    config = yaml.safe_load((DEPLOY / "jobqueue.yaml").read_text())
    merged = dask.config.merge(dask.config.config, config)
    with dask.config.set(jobqueue=merged["jobqueue"]), SLURMCluster(
            scheduler_options={"host": "127.0.0.1", "dashboard_address": None}) as cluster:
        script = cluster.job_script()  # made, never submitted
    assert "--nthreads 1" in script and "--nworkers 8" in script
    assert "export VIPS_CONCURRENCY=1" in script and "--resources MEMORY=32e9" in script


def test_kubernetes_spec_runs_mediafarm_workers_against_its_scheduler_service():
    spec, clamd_config = yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())
    assert (spec["apiVersion"], spec["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    name = spec["metadata"]["name"]
    [worker, clamd] = spec["spec"]["worker"]["spec"]["containers"]
    assert worker["args"][:3] == ["mediafarm", "worker", f"tcp://{name}-scheduler:8786"]
    assert {e["name"] for e in worker["env"]} >= {"MEDIAFARM_CATALOG_URL", "MEDIAFARM_CLAMD_URL"}
    assert clamd["ports"][0]["containerPort"] == 3310
    # The sidecar's clamd.conf is one that passes the farm's fail-closed check.
    [mount] = clamd["volumeMounts"]
    [volume] = spec["spec"]["worker"]["spec"]["volumes"]
    assert mount["mountPath"] == "/etc/clamav/clamd.conf" and volume["name"] == mount["name"]
    assert clamd_config["metadata"]["name"] == volume["configMap"]["name"]
    conf = dict(line.split(None, 1) for line in clamd_config["data"]["clamd.conf"].splitlines()
                if line and not line.startswith("#"))
    assert conf["AlertExceedsMax"] == "yes" and conf["MaxFileSize"] == conf["MaxScanSize"]
    ports = {p["name"] for p in spec["spec"]["scheduler"]["service"]["ports"]}
    assert ports == {"tcp-comm", "http-dashboard"}


def test_dask_config_section_configures_the_farm(monkeypatch):
    config = yaml.safe_load((DEPLOY / "dask.yaml").read_text())
    with dask.config.set(mediafarm=config["mediafarm"]):
        settings = load_settings(environ={})
        assert settings.catalog_url == "postgresql://mediafarm@catalog.internal/mediafarm"
        assert settings.stores["renditions"].url == "r2://media-public/renditions"
        overridden = load_settings(environ={"MEDIAFARM_CLAMD_URL": "unix:///run/clamd.ctl"})
        assert overridden.clamd_url == "unix:///run/clamd.ctl"


@pytest.mark.slow
@pytest.mark.e2e
def test_a_two_worker_cluster_started_by_command_runs_the_image_pipeline(tmp_path, clamd):
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(tmp_path / "data"),
           "MEDIAFARM_CLAMD_URL": clamd.url}
    scheduler_file = tmp_path / "scheduler.json"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)],
        env=env, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for name in ("alpha", "beta"):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "cluster.cli.main", "worker", address, "--nworkers", "1",
                 "--name", name], env=env, stderr=subprocess.DEVNULL))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            folder = tmp_path / "photos"
            folder.mkdir()
            for index in range(12):
                scene(800, 600, index).jpegsave(str(folder / f"p{index}.jpg"), Q=85)
            result = subprocess.run([sys.executable, "-m", "cluster.cli.main", "ingest", str(folder),
                                     "--scheduler", address, "--json"], env=env,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["totals"] == {"ready": 12}
            reports = worker_reports(client)  # the Farm registered the plugin on both workers
            assert len(reports) == 2
            assert all(r["untrusted_loaders_blocked"] and r["clamd"].startswith("ok")
                       for r in reports.values())
        catalog = Catalog(f"sqlite:///{tmp_path / 'data' / 'catalog.sqlite'}")
        with catalog.engine.connect() as conn:
            workers = set(conn.execute(select(StageRun.worker)).scalars())
        assert len(workers) == 2  # both command-started workers did stages
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_worker_plugin_refuses_nothing_on_a_current_libvips_and_reports_it():
    plugin = MediafarmWorkerPlugin(clamd_url=None)

    class FakeState:  # the plugin reads only the worker's declared resources
        total_resources = {"GPU": 0}

    class FakeWorker:
        state = FakeState()

    asyncio.run(plugin.setup(FakeWorker()))
    assert plugin.report["untrusted_loaders_blocked"] and plugin.report["clamd"] == "not configured"
    assert plugin.report["gpus"] == [] or all("name" in g for g in plugin.report["gpus"])


# -- metrics: the sample alert rules and dashboard name only metrics that exist -------------

METRIC_NAME = re.compile(r"\b(mediafarm_[a-z_]+|dask_scheduler_[a-z_]+)\b")


def _known_series() -> set[str]:
    from cluster import metrics
    from prometheus_client import REGISTRY

    names = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    names |= {metrics.STAGE_SECONDS._name + suffix for suffix in ("_bucket", "_count", "_sum")}
    for counter in (metrics.OUTCOMES, metrics.SCANNER_ERRORS, metrics.STORE_RETRIES,
                    metrics.STORE_ERRORS):
        names.add(counter._name + "_total")
    return names | {"dask_scheduler_workers"}  # the Dask scheduler's own


def test_sample_alert_rules_are_prometheus_rule_groups_over_the_farms_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    [group] = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {"MediafarmScannerErrors", "MediafarmFailureRatioHigh", "MediafarmNoWorkers",
            "MediafarmSubmitQueueDeep", "MediafarmStageSlow"} <= set(alerts)
    known = _known_series()
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used and used <= known, (name, used - known)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) not installed")
def test_promtool_accepts_the_sample_alert_rules():
    checked = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sample_dashboard_charts_only_the_farms_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "mediafarm.json").read_text())
    assert dashboard["uid"] == "mediafarm" and dashboard["panels"]
    known, charted = _known_series(), set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(METRIC_NAME.findall(target["expr"]))
            assert used and used <= known, (panel["title"], used - known)
            charted |= used
    assert {"mediafarm_stage_duration_seconds_bucket", "mediafarm_outcomes_total",
            "mediafarm_scanner_errors_total", "mediafarm_store_errors_total",
            "mediafarm_assets_in_flight", "mediafarm_submit_queue_depth"} <= charted
