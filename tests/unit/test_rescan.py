"""Re-scans' pure parts: which signature versions are older, what a run compares against,
and how its report reads."""

from __future__ import annotations

import io

import pytest

from catalog.rescans import is_older
from cluster.cli.rescan_command import print_report
from cluster.rescan import Report, current_version


class _Scanner:
    url = "tcp://127.0.0.1:3310"

    def __init__(self, version: str) -> None:
        self._version = version

    def version(self) -> tuple[str, str]:
        return "ClamAV 1.4.6", self._version


@pytest.mark.parametrize("recorded, current, older", [
    ("27000", "27400", True), ("27400", "27400", False), ("27500", "27400", False),
    ("custom", "27400", True), (None, "27400", True), ("custom", "custom", False),
    ("custom-aa", "custom-bb", True), ("custom-aa", "custom-aa", False), (None, "custom", True),
])
def test_older_signature_versions(recorded, current, older):
    assert is_older(recorded, current) is older


def test_the_version_compared_against():
    assert current_version(_Scanner("27400"), None, False) == "27400"
    assert current_version(_Scanner("27400"), "/ignored", True) == "27400"
    assert current_version(_Scanner("custom"), None, True) == "custom"
    with pytest.raises(ValueError, match="--signatures DIR.*--all"):
        current_version(_Scanner("custom"), None, False)


def test_the_report_counts_assets_and_lists_what_needs_a_person():
    report = Report("27400")
    report.add({"sha256": "a" * 64, "assets": ["x", "y"], "outcome": "clean", "message": None})
    report.add({"sha256": "b" * 64, "assets": ["z"], "outcome": "infected",
                "message": "a re-scan on 2026-12-07 found Eicar"})
    report.add({"sha256": "c" * 64, "assets": ["w"], "outcome": "missing",
                "message": "its original is gone"})
    out = io.StringIO()
    print_report(report.as_dict(), out)
    assert out.getvalue().splitlines() == [
        "signatures 27400: 2 clean, 1 infected, 1 missing",
        "infected bbbbbbbbbbbb (z): a re-scan on 2026-12-07 found Eicar",
        "missing cccccccccccc (w): its original is gone"]
    out = io.StringIO()
    print_report(Report("27400").as_dict(), out)
    assert "nothing to re-scan" in out.getvalue()
