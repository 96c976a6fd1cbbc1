"""Configuration from ``MEDIAFARM_*`` environment variables, over an optional YAML file.

Defaults give the embedded set-up: a SQLite catalog and local stores under
``./mediafarm-data``, clamd on its standard port, and a LocalCluster.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from pipelines.upload.scan import parse_clamd_url
from pipelines.upload.validate import Limits

log = logging.getLogger(__name__)

STORE_NAMES = ("originals", "renditions", "quarantine", "buffer")
GPU_MODES = ("auto", "off")
DEFAULT_CLAMD_URL = "tcp://127.0.0.1:3310"
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:0"
# What the project's own clamd (cluster/cli/local_clamd.py) and deploy/kubernetes.yaml set
# as StreamMaxLength: 2047M, just under the 2 GiB - 1 that ClamAV 1.4 can scan at all.
SCAN_MAX_BYTES = 2047 * 1024 * 1024
SCAN_OVERSIZE_MODES = ("reject", "skip")
# Split by kind (issue 18): refused with the names that replace it, since its meaning changed.
RETIRED = {"max_bytes": "it was split by kind: set MEDIAFARM_MAX_IMAGE_BYTES (images, decoded "
                        "in memory) and MEDIAFARM_MAX_MEDIA_BYTES (video and audio, streamed)"}


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
    # How long joining a scheduler (--scheduler, DASK_SCHEDULER_ADDRESS) may take before
    # the command gives up; Dask's own default is 30 s.
    scheduler_timeout_s: float = 10.0
    # The longest stream the farm assumes clamd scans (its StreamMaxLength; ClamAV 1.4 scans
    # no file over 2 GiB - 1). A longer source is rejected scan_limit_exceeded before any byte
    # is stored, unless scan_oversize is "skip": then it is stored unscanned, and its scan
    # stage row says so (status skipped, the sizes in its details). For trusted sources only.
    scan_max_bytes: int = SCAN_MAX_BYTES
    scan_oversize: str = "reject"
    # Whether the catalog keeps where a photo or video was taken (blobs.gps_lat, gps_lon). Off by
    # default: a place is personal data. Farm-wide, since a blob's metadata is shared by every
    # owner of the same bytes. Renditions never carry it either way.
    keep_gps: bool = False

    def key(self) -> str:
        """A stable string naming this configuration, for per-process caches."""
        return json.dumps(asdict(self), sort_keys=True, default=str)


# Variables read by other modules (the HTTP endpoint, the sandbox, benchmarks), which the
# file does not take; and the test suite's own prefix.
ENVIRONMENT_ONLY = (
    "MEDIAFARM_API_MAX_UPLOAD_BYTES", "MEDIAFARM_API_CONTENT_TYPES", "MEDIAFARM_API_SOURCE_STORES",
    "MEDIAFARM_API_INGEST_PREFIX", "MEDIAFARM_API_RATE_LIMIT", "MEDIAFARM_API_RATE_BURST",
    "MEDIAFARM_API_URL_EXPIRES", "MEDIAFARM_API_URL_SECRET", "MEDIAFARM_API_SPOOL_DIR",
    "MEDIAFARM_API_PUBLIC_URL",
    "MEDIAFARM_API_TRUSTED_PROXIES", "MEDIAFARM_API_HEADER_TIMEOUT", "MEDIAFARM_API_BODY_TIMEOUT",
    "MEDIAFARM_API_MAX_UNAUTHENTICATED_CONNECTIONS", "MEDIAFARM_API_CLIENT_RATE_LIMIT",
    "MEDIAFARM_API_CLIENT_RATE_BURST", "MEDIAFARM_PURGE_ORIGINALS_ON_DELETE",
    "MEDIAFARM_API_UPLOAD_EXPIRES", "MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL",
    "MEDIAFARM_WEBHOOK_ALLOWED_HOSTS", "MEDIAFARM_WEBHOOK_MAX_ATTEMPTS", "MEDIAFARM_WEBHOOK_RETRY",
    "MEDIAFARM_WEBHOOK_TIMEOUT", "MEDIAFARM_WEBHOOK_INTERVAL",
    "MEDIAFARM_SANDBOX_WARM", "MEDIAFARM_PHOTOS_DIR",
)
TEST_PREFIX = "MEDIAFARM_TEST_"
_LIMITS = tuple(f.name for f in fields(Limits))
# Keys of the file (and of Dask's `mediafarm:` section): the settings, and the limits both
# on their own, as the environment names them, and under `limits:`.
_FILE_KEYS = tuple(f.name for f in fields(Settings) if f.name != "limits") + _LIMITS + ("limits",)
_STORE_KEYS = ("url", "options")
_warned: set[str] = set()


def load_settings(environ: Mapping[str, str] | None = None,
                  config_file: str | Path | None = None) -> Settings:
    """Read settings: environment variables win over the YAML file, which wins over defaults.

    Keys may be spelt with hyphens or underscores; an unknown key is a ValueError naming
    it, and an unknown ``MEDIAFARM_*`` variable a logged warning.
    """
    env = os.environ if environ is None else environ
    for name, why in RETIRED.items():
        if env.get(f"MEDIAFARM_{name.upper()}") is not None:
            raise ValueError(f"MEDIAFARM_{name.upper()} is no longer read: {why}")
    _warn_unknown_environment(env)
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
        options = (_json(f"MEDIAFARM_STORE_{name.upper()}_OPTIONS", options_text) if options_text
                   else dict(from_file.get("options") or {}))
        stores[name] = StoreConfig(url, options)
    file_limits = {**{k: v for k, v in file_values.items() if k in _LIMITS},
                   **(file_values.get("limits") or {})}
    return Settings(
        data_dir=str(data_dir),
        catalog_url=pick("catalog_url", f"sqlite:///{data_dir / 'catalog.sqlite'}"),
        clamd_url=_clamd_url(pick("clamd_url", DEFAULT_CLAMD_URL)),
        stores=stores,
        scheduler_address=env.get("DASK_SCHEDULER_ADDRESS") or file_values.get("scheduler_address"),
        limits=_limits(env, file_limits),
        split_after_s=float(pick("split_after_s", "120")),
        chunk_s=float(pick("chunk_s", "60")),
        catalog_retry_s=float(pick("catalog_retry_s", "60")),
        storage_retry_s=float(pick("storage_retry_s", "30")),
        gpu=_gpu_mode(pick("gpu", "auto")),
        dashboard_address=pick("dashboard_address", DEFAULT_DASHBOARD_ADDRESS),
        scheduler_timeout_s=float(pick("scheduler_timeout_s", "10")),
        scan_max_bytes=int(pick("scan_max_bytes", str(SCAN_MAX_BYTES))),
        scan_oversize=_scan_oversize(pick("scan_oversize", "reject")),
        keep_gps=_flag("MEDIAFARM_KEEP_GPS", pick("keep_gps", "false")),
    )


def _environment_names() -> list[str]:
    names = [f"MEDIAFARM_{name.upper()}" for name in _FILE_KEYS
             if name not in ("stores", "limits", "scheduler_address")]
    names += [f"MEDIAFARM_STORE_{store.upper()}_{key.upper()}"
              for store in STORE_NAMES for key in _STORE_KEYS]
    # Retired names are read too: to refuse them with what replaced them.
    return names + ["MEDIAFARM_CONFIG", *ENVIRONMENT_ONLY,
                    *(f"MEDIAFARM_{name.upper()}" for name in RETIRED)]


def known_environment(name: str) -> bool:
    """Whether some part of Mediafarm reads the environment variable ``name``."""
    return name.startswith(TEST_PREFIX) or name in _environment_names()


def _warn_unknown_environment(env: Mapping[str, str]) -> None:
    for name in sorted(env):
        if name.startswith("MEDIAFARM_") and name not in _warned and not known_environment(name):
            _warned.add(name)  # once per process, however often settings are read
            hint = _near(name, [*_environment_names(), "DASK_SCHEDULER_ADDRESS"])
            log.warning("unknown environment variable %s is ignored%s", name, hint)


def _near(word: str, candidates: Collection[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _checked(section: object, allowed: Collection[str], source: str, where: str) -> dict:
    """``section`` with its keys' hyphens read as underscores; an unknown key is an error."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{source}: expected a mapping at {where or 'the top'}, got {section!r}")
    checked = {}
    for key, value in section.items():
        name = str(key).replace("-", "_")
        if name in RETIRED and name not in allowed:
            raise ValueError(f"{source}: {key!r} is no longer read: {RETIRED[name]}")
        if name not in allowed:
            dotted = f"{where}.{key}" if where else str(key)
            variable = f"MEDIAFARM_{name.upper()}"
            if variable in ENVIRONMENT_ONLY:
                raise ValueError(f"{source}: {key!r} is read from the environment only; "
                                 f"set {variable} instead")
            raise ValueError(f"{source}: unknown key {dotted!r}{_near(name, allowed)}")
        checked[name] = value
    return checked


def _section(values: object, source: str, prefix: str = "") -> dict:
    """The ``mediafarm`` settings of a file or of Dask's config, checked and normalised."""
    def where(*keys: str) -> str:
        return ".".join(filter(None, (prefix, *keys)))

    section = _checked(values, _FILE_KEYS, source, prefix)
    if section.get("limits") is not None:
        section["limits"] = _checked(section["limits"], _LIMITS, source, where("limits"))
    stores = _checked(section.get("stores") or {}, STORE_NAMES, source, where("stores"))
    # A store's options are fsspec's own keywords: passed on as written.
    section["stores"] = {name: _checked(store or {}, _STORE_KEYS, source, where("stores", name))
                         for name, store in stores.items()}
    return section


def _json(variable: str, text: str) -> dict:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{variable} is not JSON ({exc})") from None


def _clamd_url(text: str) -> str:
    try:
        parse_clamd_url(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (MEDIAFARM_CLAMD_URL, clamd_url)") from None
    return text


def _scan_oversize(text: str) -> str:
    mode = str(text).strip().lower()
    if mode not in SCAN_OVERSIZE_MODES:
        raise ValueError(f"MEDIAFARM_SCAN_OVERSIZE is {text!r}; expected one of {SCAN_OVERSIZE_MODES}")
    return mode


def _flag(variable: str, text: object) -> bool:
    if isinstance(text, bool):  # YAML's own true and false
        return text
    value = str(text).strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{variable} is {text!r}; expected true or false")
    return value in ("1", "true", "yes", "on")


def _gpu_mode(text: str) -> str:
    mode = str(text).strip().lower()
    if mode not in GPU_MODES:
        raise ValueError(f"MEDIAFARM_GPU is {text!r}; expected one of {GPU_MODES}")
    return mode


def _limits(env: Mapping[str, str], from_file: dict) -> Limits:
    """``MEDIAFARM_MAX_IMAGE_BYTES``, ``_MAX_MEDIA_BYTES``, ``_MAX_PIXELS``... override ``limits:`` in the file."""
    values = {}
    for name in _LIMITS:
        text = env.get(f"MEDIAFARM_{name.upper()}") or from_file.get(name)
        if text is not None:
            values[name] = int(text)
    return Limits(**values)


def _dask_section() -> dict:
    import dask.config

    section = dask.config.get("mediafarm", default={}) or {}
    return _section(section, "Dask config", "mediafarm") if section else {}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    with path.open(encoding="utf-8") as stream:  # a stream: YAML errors then name the file
        data = yaml.safe_load(stream) or {}
    section = data.get("mediafarm", data) if isinstance(data, dict) else data
    return _section(section or {}, str(path))
