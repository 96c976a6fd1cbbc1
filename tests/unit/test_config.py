"""Settings: defaults under ./mediafarm-data, a YAML file over them, MEDIAFARM_* over both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cluster.config import STORE_NAMES, StoreConfig, load_settings
from cluster.http.service import load_api_config


def test_defaults_live_under_mediafarm_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    data_dir = tmp_path / "mediafarm-data"
    assert settings.data_dir == str(data_dir)
    assert settings.catalog_url == f"sqlite:///{data_dir / 'catalog.sqlite'}"
    assert settings.clamd_url == "tcp://127.0.0.1:3310"
    assert settings.scheduler_address is None
    assert settings.stores == {name: StoreConfig((data_dir / "stores" / name).as_uri())
                               for name in STORE_NAMES}


def test_environment_overrides_defaults(tmp_path):
    settings = load_settings(environ={
        "MEDIAFARM_DATA_DIR": str(tmp_path / "farm"),
        "MEDIAFARM_CATALOG_URL": "postgresql+psycopg://farm@db/mediafarm",
        "MEDIAFARM_CLAMD_URL": f"unix://{tmp_path}/clamd.ctl",
        "MEDIAFARM_STORE_RENDITIONS_URL": "s3://public-renditions/v1",
        "MEDIAFARM_STORE_RENDITIONS_OPTIONS": json.dumps({"anon": False, "key": "k"}),
        "DASK_SCHEDULER_ADDRESS": "tcp://scheduler:8786",
    })
    assert settings.data_dir == str(tmp_path / "farm")
    assert settings.catalog_url == "postgresql+psycopg://farm@db/mediafarm"
    assert settings.clamd_url == f"unix://{tmp_path}/clamd.ctl"
    assert settings.scheduler_address == "tcp://scheduler:8786"
    assert settings.stores["renditions"] == StoreConfig("s3://public-renditions/v1",
                                                        {"anon": False, "key": "k"})
    assert settings.stores["originals"].url == (tmp_path / "farm" / "stores" / "originals").as_uri()


def write_config(tmp_path):
    path = tmp_path / "mediafarm.yaml"
    path.write_text(
        "mediafarm:\n"
        "  catalog_url: postgresql+psycopg://file@db/mediafarm\n"
        "  clamd_url: tcp://clamd:3310\n"
        "  scheduler_address: tcp://file-scheduler:8786\n"
        "  stores:\n"
        "    renditions:\n"
        "      url: r2://renditions/public\n"
        "      options: {account_id: acct}\n")
    return path


def test_yaml_file_sets_values_and_stores(tmp_path):
    settings = load_settings(environ={}, config_file=write_config(tmp_path))
    assert settings.catalog_url == "postgresql+psycopg://file@db/mediafarm"
    assert settings.clamd_url == "tcp://clamd:3310"
    assert settings.scheduler_address == "tcp://file-scheduler:8786"
    assert settings.stores["renditions"] == StoreConfig("r2://renditions/public", {"account_id": "acct"})


def test_yaml_file_is_found_through_mediafarm_config(tmp_path):
    settings = load_settings(environ={"MEDIAFARM_CONFIG": str(write_config(tmp_path))})
    assert settings.clamd_url == "tcp://clamd:3310"


def test_environment_wins_over_the_file(tmp_path):
    settings = load_settings(config_file=write_config(tmp_path), environ={
        "MEDIAFARM_CLAMD_URL": "tcp://env-clamd:3310",
        "MEDIAFARM_STORE_RENDITIONS_URL": "s3://env-bucket/r",
        "MEDIAFARM_STORE_RENDITIONS_OPTIONS": "{}",
        "DASK_SCHEDULER_ADDRESS": "tcp://env-scheduler:8786",
    })
    assert settings.clamd_url == "tcp://env-clamd:3310"
    assert settings.catalog_url == "postgresql+psycopg://file@db/mediafarm"
    assert settings.scheduler_address == "tcp://env-scheduler:8786"
    assert settings.stores["renditions"] == StoreConfig("s3://env-bucket/r", {})


def test_missing_config_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_settings(environ={}, config_file=tmp_path / "missing.yaml")


def test_dashboard_listens_on_loopback_unless_configured(tmp_path):
    assert load_settings(environ={}).dashboard_address == "127.0.0.1:0"
    exposed = load_settings(environ={"MEDIAFARM_DASHBOARD_ADDRESS": "0.0.0.0:8787"})
    assert exposed.dashboard_address == "0.0.0.0:8787"


def _ingest_settings(tmp_path):
    return load_settings(environ={"MEDIAFARM_DATA_DIR": str(tmp_path),
                                  "MEDIAFARM_STORE_BUFFER_URL": "s3://media/buffer",
                                  "MEDIAFARM_STORE_ORIGINALS_URL": "s3://media/originals"})


@pytest.mark.parametrize("prefix", [
    "s3://media/buffer/ingest/{owner}/", "s3://media/buffer/ingest/{owner}",
    "s3://drop-bucket/{owner}/"])
def test_an_ingest_prefix_in_a_folder_of_its_own_is_taken(tmp_path, prefix):
    config = load_api_config(_ingest_settings(tmp_path), {"MEDIAFARM_API_INGEST_PREFIX": prefix})
    assert config.ingest_prefix == prefix


@pytest.mark.parametrize("prefix", [
    "s3://media/{owner}/",                      # the owner "originals" would get that store
    "s3://media/originals/ingest/{owner}/",     # never inside the originals
    "s3://media/buffer/{owner}/",               # owners named sha256, owners, uploads
    "s3://media/buffer/owners/{owner}/",        # every owner's uploads
    "s3://media/buffer/uploads/{owner}/",
    "s3://media/buffer/ingest/{owner}/x/",      # the owner's folder must end the prefix
    "s3://media/buffer/ingest-{owner}/",        # ...and be a whole path segment
    "s3://media/buffer/ingest/",                # no placeholder
])
def test_an_ingest_prefix_that_would_open_shared_objects_is_refused(tmp_path, prefix):
    with pytest.raises(ValueError, match="MEDIAFARM_API_INGEST_PREFIX"):
        load_api_config(_ingest_settings(tmp_path), {"MEDIAFARM_API_INGEST_PREFIX": prefix})


# -- what a file or the environment may say, and what a typo gets -------------------------------

def test_the_shipped_dask_config_file_is_read_with_its_hyphenated_keys(tmp_path):
    deploy = Path(__file__).parents[2] / "deploy" / "dask.yaml"
    settings = load_settings(environ={}, config_file=deploy)
    assert settings.catalog_url == "postgresql://mediafarm@catalog.internal/mediafarm"
    assert settings.stores["renditions"] == StoreConfig("r2://media-public/renditions",
                                                        {"account_id": "ACCOUNT"})


def test_hyphens_and_underscores_both_work_at_every_level(tmp_path):
    path = tmp_path / "farm.yaml"
    path.write_text("mediafarm:\n"
                    "  catalog-url: sqlite:///x.sqlite\n"
                    "  split_after-s: 30\n"
                    "  limits: {max-side: 4000, max_pixels: 9000000}\n"
                    "  stores:\n"
                    "    originals: {url: 's3://o/p',\n"
                    "                options: {client_kwargs: {region_name: r}}}\n")
    settings = load_settings(environ={}, config_file=path)
    assert settings.catalog_url == "sqlite:///x.sqlite"
    assert settings.split_after_s == 30
    assert (settings.limits.max_side, settings.limits.max_pixels) == (4000, 9000000)
    # Storage options are fsspec's own keywords, passed on as written.
    assert settings.stores["originals"] == StoreConfig("s3://o/p",
                                                       {"client_kwargs": {"region_name": "r"}})


@pytest.mark.parametrize("text, named, suggested", [
    ("catalog_ulr: sqlite:///x", "catalog_ulr", "catalog_url"),
    ("clamd-uri: tcp://c:3310", "clamd-uri", "clamd_url"),
    ("stores: {originls: {url: 's3://o/p'}}", "stores.originls", "originals"),
    ("stores: {originals: {ulr: 's3://o/p'}}", "stores.originals.ulr", "url"),
    ("limits: {max_image_byte: 10}", "limits.max_image_byte", "max_image_bytes"),
])
def test_an_unknown_key_is_an_error_naming_it_and_the_near_match(tmp_path, text, named, suggested):
    path = tmp_path / "farm.yaml"
    path.write_text(f"mediafarm:\n  {text}\n")
    with pytest.raises(ValueError) as error:
        load_settings(environ={}, config_file=path)
    message = str(error.value)
    assert str(path) in message and repr(named) in message and repr(suggested) in message


def test_a_key_only_the_environment_sets_is_refused_in_the_file_with_its_variable(tmp_path):
    path = tmp_path / "farm.yaml"
    path.write_text("api_rate_limit: 5\n")
    with pytest.raises(ValueError, match="MEDIAFARM_API_RATE_LIMIT"):
        load_settings(environ={}, config_file=path)


def test_the_dask_config_section_is_checked_too(monkeypatch):
    import dask.config

    with dask.config.set({"mediafarm": {"catalog-url": "sqlite:///d.sqlite"}}):
        assert load_settings(environ={}).catalog_url == "sqlite:///d.sqlite"
    with dask.config.set({"mediafarm": {"catalog-ulr": "sqlite:///d.sqlite"}}), \
            pytest.raises(ValueError, match="catalog-ulr.*catalog_url"):
        load_settings(environ={})


def test_an_unknown_mediafarm_variable_is_a_one_line_warning_with_the_near_match(caplog):
    load_settings(environ={"MEDIAFARM_CATALOG_ULR": "sqlite:///x", "MEDIAFARM_API_RATE_LIMIT": "3",
                           "MEDIAFARM_STORE_BUFFER_URL": "s3://b/p", "MEDIAFARM_MAX_SIDE": "10"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "MEDIAFARM_CATALOG_ULR" in warnings[0] and "MEDIAFARM_CATALOG_URL" in warnings[0]


def test_every_mediafarm_variable_the_code_reads_is_known():
    """A new MEDIAFARM_* variable must be added to the list, or users setting it get a warning."""
    from cluster.config import known_environment

    root = Path(__file__).parents[2]
    names = {name for folder in ("cluster", "catalog", "pipelines", "tests", "benchmarks")
             for path in (root / folder).rglob("*.py")
             for name in re.findall(r"\bMEDIAFARM_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())}
    names -= {"MEDIAFARM_STORE", "MEDIAFARM_API",  # prefixes
              "MEDIAFARM_CATALOG_ULR"}  # the typo above
    assert {n for n in names if not known_environment(n)} == set()


def test_size_limits_are_set_by_kind_and_the_scanner_limit_on_its_own(tmp_path):
    settings = load_settings(environ={
        "MEDIAFARM_DATA_DIR": str(tmp_path), "MEDIAFARM_MAX_IMAGE_BYTES": "1000",
        "MEDIAFARM_MAX_MEDIA_BYTES": "2000", "MEDIAFARM_SCAN_MAX_BYTES": "1500",
        "MEDIAFARM_SCAN_OVERSIZE": "skip"})
    assert (settings.limits.max_image_bytes, settings.limits.max_media_bytes) == (1000, 2000)
    assert settings.limits.max_bytes == 2000  # what an upload may carry before its kind is known
    assert (settings.scan_max_bytes, settings.scan_oversize) == (1500, "skip")
    defaults = load_settings(environ={"MEDIAFARM_DATA_DIR": str(tmp_path)})
    assert defaults.limits.max_image_bytes == 200 * 1024 ** 2
    assert defaults.limits.max_media_bytes == 50 * 1024 ** 3
    assert (defaults.scan_max_bytes, defaults.scan_oversize) == (2047 * 1024 ** 2, "reject")


def test_the_scanner_oversize_policy_takes_only_reject_or_skip(tmp_path):
    with pytest.raises(ValueError, match="MEDIAFARM_SCAN_OVERSIZE.*'reject', 'skip'"):
        load_settings(environ={"MEDIAFARM_DATA_DIR": str(tmp_path), "MEDIAFARM_SCAN_OVERSIZE": "yes"})


def test_the_retired_max_bytes_is_refused_naming_what_replaced_it(tmp_path):
    with pytest.raises(ValueError, match="MEDIAFARM_MAX_BYTES.*MEDIAFARM_MAX_IMAGE_BYTES.*"
                                         "MEDIAFARM_MAX_MEDIA_BYTES"):
        load_settings(environ={"MEDIAFARM_DATA_DIR": str(tmp_path), "MEDIAFARM_MAX_BYTES": "10"})
    path = tmp_path / "farm.yaml"
    for text in ("max_bytes: 10", "limits: {max-bytes: 10}"):
        path.write_text(f"mediafarm:\n  {text}\n")
        with pytest.raises(ValueError, match="no longer read.*MEDIAFARM_MAX_MEDIA_BYTES"):
            load_settings(environ={}, config_file=path)


def test_places_are_kept_only_when_asked(tmp_path):
    base = {"MEDIAFARM_DATA_DIR": str(tmp_path)}
    assert load_settings(environ=base).keep_gps is False
    for text, kept in (("true", True), ("1", True), ("off", False), ("False", False)):
        assert load_settings(environ={**base, "MEDIAFARM_KEEP_GPS": text}).keep_gps is kept
    with pytest.raises(ValueError, match="MEDIAFARM_KEEP_GPS is 'maybe'"):
        load_settings(environ={**base, "MEDIAFARM_KEEP_GPS": "maybe"})
    config = tmp_path / "farm.yml"
    config.write_text("mediafarm:\n  keep-gps: true\n")
    assert load_settings(environ=base, config_file=config).keep_gps is True
