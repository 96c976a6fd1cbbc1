"""Configuration from ``MEDIAFARM_*`` environment variables, over an optional YAML file.

Defaults give the embedded set-up: a SQLite catalog and local stores under
``./mediafarm-data``, clamd on its standard port, and a LocalCluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pipelines.upload.validate import Limits

STORE_NAMES = ("originals", "renditions", "quarantine", "buffer")
GPU_MODES = ("auto", "off")
DEFAULT_CLAMD_URL = "tcp://127.0.0.1:3310"
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:0"


@dataclass(frozen=True)
class StoreConfig:
    url: str
    options: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Settings:
    data_dir: str
    catalog_url: str
    clamd_url: str
    stores: dict[str, StoreConfig] = field(hash=False)
    scheduler_address: str | None = None
    limits: Limits = Limits()
    # Videos longer than split_after_s are encoded in chunk_s spans on several workers.
    split_after_s: float = 120.0
    chunk_s: float = 60.0
    # How long a catalog transaction retries while the database server is unreachable.
    catalog_retry_s: float = 60.0
    # How long store IO retries transient errors (outages, 5xx, throttling) before failing.
    storage_retry_s: float = 30.0
    # "auto": GPU-capable stages run on workers that declare a GPU resource; "off": CPU only.
    gpu: str = "auto"
    # Where an own LocalCluster's dashboard listens: loopback by default, since it shows call
    # stacks, logs and task data to anyone who reaches it, with no authentication.
    dashboard_address: str = DEFAULT_DASHBOARD_ADDRESS

    def key(self) -> str:
        """A stable string naming this configuration, for per-process caches."""
        return json.dumps(asdict(self), sort_keys=True, default=str)


def load_settings(environ: Mapping[str, str] | None = None,
                  config_file: str | Path | None = None) -> Settings:
    """Read settings: environment variables win over the YAML file, which wins over defaults."""
    env = os.environ if environ is None else environ
    path = config_file or env.get("MEDIAFARM_CONFIG")
    # Dask's own config (a `mediafarm:` section in ~/.config/dask/*.yaml, or
    # DASK_MEDIAFARM__CATALOG_URL...) is the lowest layer, under our file and env.
    file_values = {**_dask_section(), **(_read_yaml(Path(path)) if path else {})}

    def pick(name: str, default: str | None) -> str | None:
        return env.get(f"MEDIAFARM_{name.upper()}") or file_values.get(name) or default

    data_dir = Path(pick("data_dir", "mediafarm-data")).expanduser().absolute()
    stores = {}
    file_stores = file_values.get("stores") or {}
    for name in STORE_NAMES:
        from_file = file_stores.get(name) or {}
        url = (env.get(f"MEDIAFARM_STORE_{name.upper()}_URL") or from_file.get("url")
               or (data_dir / "stores" / name).as_uri())
        options_text = env.get(f"MEDIAFARM_STORE_{name.upper()}_OPTIONS")
        options = json.loads(options_text) if options_text else dict(from_file.get("options") or {})
        stores[name] = StoreConfig(url, options)
    return Settings(
        data_dir=str(data_dir),
        catalog_url=pick("catalog_url", f"sqlite:///{data_dir / 'catalog.sqlite'}"),
        clamd_url=pick("clamd_url", DEFAULT_CLAMD_URL),
        stores=stores,
        scheduler_address=env.get("DASK_SCHEDULER_ADDRESS") or file_values.get("scheduler_address"),
        limits=_limits(env, file_values.get("limits") or {}),
        split_after_s=float(pick("split_after_s", "120")),
        chunk_s=float(pick("chunk_s", "60")),
        catalog_retry_s=float(pick("catalog_retry_s", "60")),
        storage_retry_s=float(pick("storage_retry_s", "30")),
        gpu=_gpu_mode(pick("gpu", "auto")),
        dashboard_address=pick("dashboard_address", DEFAULT_DASHBOARD_ADDRESS),
    )


def _gpu_mode(text: str) -> str:
    mode = str(text).strip().lower()
    if mode not in GPU_MODES:
        raise ValueError(f"MEDIAFARM_GPU is {text!r}; expected one of {GPU_MODES}")
    return mode


def _limits(env: Mapping[str, str], from_file: dict) -> Limits:
    """``MEDIAFARM_MAX_BYTES``, ``_MAX_PIXELS``... override ``limits:`` in the file."""
    values = {}
    for name in Limits.__dataclass_fields__:
        text = env.get(f"MEDIAFARM_{name.upper()}") or from_file.get(name)
        if text is not None:
            values[name] = int(text)
    return Limits(**values)


def _dask_section() -> dict:
    import dask.config

    section = dask.config.get("mediafarm", default={}) or {}
    return {key.replace("-", "_"): value for key, value in section.items()}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    section = data.get("mediafarm", data)
    if not isinstance(section, dict):
        raise ValueError(f"{path}: expected a mapping under 'mediafarm:'")
    return section
