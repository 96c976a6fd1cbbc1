"""The notebooks' progress line: a bar only where the total is known, full when finished."""

from __future__ import annotations

from collections import Counter

from cluster.cli.notebook import Progress


def _html(done, total, counts) -> str:
    progress = Progress.__new__(Progress)  # without a display: only the rendering is tested
    progress.label, progress.started, progress.handle = "assets", 0.0, None
    return progress._render(done, total, Counter(counts)).data


def test_a_finished_run_draws_a_full_bar():
    html = _html(7, 7, {"ready": 5, "rejected": 2})
    assert "7/7 assets" in html and "width:100%" in html and "ready 5, rejected 2" in html


def test_a_run_with_nothing_to_redo_says_so_instead_of_starting():
    html = _html(7, 7, {})
    assert "nothing to redo" in html and "starting" not in html and "/s" not in html


def test_an_unknown_total_draws_no_bar_rather_than_an_empty_one():
    html = _html(120, None, {"ready": 120})
    assert "120/? assets" in html and "width:0%" not in html and "background:#3a7" not in html
