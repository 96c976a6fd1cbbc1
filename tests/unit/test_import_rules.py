"""The rooms stay as drawn: the import-linter contracts in pyproject.toml hold (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[2]


def test_every_import_contract_is_kept():
    # In a child process, as `lint-imports` runs: it reads the source and imports none of it.
    run = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, "an import breaks a room's contract:\n" + report[max(report.find("Broken contracts"), 0):]
    assert "0 broken" in report
