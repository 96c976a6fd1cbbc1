"""A farm started from a plain script, as a new user would: the README example runs, a kill leaves nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cluster.cli.samples import scene

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


def test_a_script_killed_mid_run_leaves_no_worker_processes(tmp_path):
    # The hang left workers stuck re-importing the script, where they never watch their
    # parent; workers that start cleanly exit with it (distributed's parent-alive pipe).
    (tmp_path / "script.py").write_text(
        "import os, time\n"
        "from cluster import Farm\n"
        "with Farm() as farm:\n"
        "    print(*farm.client.run(os.getpid).values(), flush=True)\n"
        "    time.sleep(600)\n")
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    script = subprocess.Popen([sys.executable, "script.py"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        workers = [psutil.Process(int(pid)) for pid in script.stdout.readline().split()]
        assert workers, "the script printed no worker pids"
    finally:
        script.kill()
        script.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=120)
    assert not alive, f"workers outlived the killed script: {alive}"
