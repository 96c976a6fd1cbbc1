"""``pip install .`` alone, no extras, gives a package whose every module imports and whose
command runs: the test extra must not hide an undeclared dependency."""

from __future__ import annotations

import shutil
import os
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FILES = ("pyproject.toml", "README.md", "pipelines", "cluster", "catalog", "mediafarm")

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
failed = []
for top in ("pipelines", "cluster", "catalog", "mediafarm"):
    for info in pkgutil.walk_packages(importlib.import_module(top).__path__, top + "."):
        if ".migrations" in info.name or info.name.endswith(".__main__"):
            continue  # Alembic's scripts, loaded by Alembic; `python -m` entry points run
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.timeout(900)
def test_a_plain_install_imports_every_module_and_runs_the_command(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGE_FILES:  # a copy, so the build leaves nothing in the checkout
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    venv.create(tmp_path / "venv", with_pip=True)
    # Nothing of the test environment may leak in: no PYTHONPATH, run from an empty folder.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(source)],
                             env=env, capture_output=True, text=True, timeout=840)
    assert install.returncode == 0, install.stderr[-3000:]
    imports = subprocess.run([python, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert imports.returncode == 0, imports.stdout + imports.stderr[-3000:]
    command = subprocess.run([tmp_path / "venv" / "bin" / "mediafarm", "--help"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    assert command.returncode == 0 and "ingest" in command.stdout, command.stderr
    version = subprocess.run([python, "-m", "mediafarm", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("mediafarm 0."), version.stderr
