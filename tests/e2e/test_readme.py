"""The README's Python example, saved as a plain script and run as a new user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.samples import scene

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def readme_python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_first_python_example_runs_as_a_script_without_a_main_guard(tmp_path, clamd):
    snippet = readme_python_snippets()[0]
    assert "with Farm() as farm:" in snippet and "__main__" not in snippet
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        scene(640, 480, index).jpegsave(str(photos / f"photo-{index}.jpg"), Q=85)
    (tmp_path / "example.py").write_text(snippet)
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(tmp_path / "data"),
           "MEDIAFARM_CLAMD_URL": clamd.url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # Without the fix the spawned workers re-run the script and the parent waits forever.
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("ready None [") for line in lines), run.stdout
    assert "bootstrapping phase" not in run.stderr
