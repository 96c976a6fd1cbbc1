"""The notebooks run as they are: a fresh kernel each, from notebooks/, on the embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Cells that may only import, call and display: no definitions, loops or branches of their own.
FORBIDDEN = ("def ", "class ", "for ", "while ", "if ", "lambda", "try:")


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> Path:
    """A ``python3`` kernelspec running this interpreter (the venv's), first on JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (mediafarm venv)", "language": "python"}))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One data folder for the three notebooks, as a user running them in order would have."""
    return tmp_path_factory.mktemp("notebook-data")


def _stop_leftover_clamd(data_dir: Path) -> None:
    """If a notebook failed before its last cell, its clamd is still running: stop that one."""
    pid_file = data_dir / "clamd" / "clamd.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return
    if str(data_dir / "clamd" / "clamd.conf").encode() in cmdline:
        os.kill(pid, signal.SIGTERM)


def _outputs(notebook, kind: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if kind in o.get("data", {})]


def _text(notebook) -> str:
    chunks = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            chunks.append(output.get("text", ""))
            chunks.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(chunks)


@pytest.mark.parametrize("name", ["01_quickstart", "02_backfill", "03_analytics", "04_library"])
def test_notebook_runs_on_a_fresh_kernel(name, kernel_path, data_dir, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("MEDIAFARM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("MEDIAFARM_CONFIG", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not any(line.lstrip().startswith(FORBIDDEN) for line in cell.source.splitlines()), \
                f"{name}: a cell holds logic of its own:\n{cell.source}"
            assert not cell.get("outputs"), f"{name}: notebooks are committed without outputs"
    client = NotebookClient(notebook, kernel_name="python3", timeout=240,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails
    finally:
        _stop_leftover_clamd(data_dir)

    text = _text(notebook)
    if name == "01_quickstart":
        assert len(_outputs(notebook, "image/webp")) >= 8  # thumb and small of 4 photos and a logo
        assert "rejected" in text and "ready" in text
        assert "Dask dashboard:" in text
    elif name == "02_backfill":
        assert "card" in text and "bytes_p50" in text
        assert "Dask dashboard:" in text and "'status': 'finished'" in text
    elif name == "04_library":
        # three groups of four copies; the unrelated pictures in none
        assert "3 groups: [4, 4, 4]" in text and "holiday" in text and "Best of" in text, text
        rows = [o["data"]["text/html"] for o in _outputs(notebook, "text/html")
                if "group " in o["data"].get("text/html", "")]
        assert len(rows) == 3 and all(row.count("data:image/webp;base64,") == 4 for row in rows)
    else:
        assert len(_outputs(notebook, "image/png")) >= 3
        assert "renditions" in text and "ClamAV" in text
    assert not list(NOTEBOOKS.glob("mediafarm-data*")), "the notebook wrote into notebooks/"
