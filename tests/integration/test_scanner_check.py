"""The fail-closed canaries against real clamds set up in the ways that matter.

Each clamd here is started for its test and stopped after it. The answers asserted
are what clamd 1.4 gives; the check's judgement follows from them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster.cli.local_clamd import start_clamd
from pipelines.outcome import Failed, Rejected
from pipelines.upload import scanner_check
from pipelines.upload.scan import ClamdScanner, scan
from tests.clamd_setups import CLAMAV_DEFAULTS, DEBIAN_CLAMD, attack_jpeg
from tests.conftest import SIGNATURES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def docs_fragment() -> dict[str, str]:
    """The clamd.conf fragment that docs/deployment.md tells people to paste."""
    block = re.search(r"```\n(# clamd\.conf: what Mediafarm needs.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/deployment.md lost its clamd.conf fragment"
    lines = [line.split() for line in block[1].splitlines() if line and not line.startswith("#")]
    return {name: value for name, value in lines}


def _check(tmp_path: Path, **options) -> scanner_check.ScannerCheck:
    daemon = start_clamd(SIGNATURES, tmp_path / "clamd", **options)
    try:
        return scanner_check.run_check(ClamdScanner(daemon.url))
    finally:
        daemon.stop()


def test_the_projects_clamd_answers_every_canary_with_a_detection_or_an_alert(clamd):
    verdict = scanner_check.run_check(ClamdScanner(clamd.url))
    assert verdict.fails_closed, verdict.answers
    assert verdict.answers["nested"] == "stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND"
    assert verdict.answers["archive"].startswith("stream: Eicar-Test-Signature")


@pytest.mark.slow
@pytest.mark.parametrize(("setup", "options", "clean", "named", "not_named"), [
    ("debian", {"stream_max_length": "25M", "overrides": DEBIAN_CLAMD},
     ["nested", "cut_member"], ["AlertExceedsMax yes", "MaxFileSize at least MaxScanSize"],
     ["ScanArchive"]),
    # AlertExceedsMax alone is not enough: members past MaxFileSize are still cut silently.
    ("debian_alerting", {"stream_max_length": "25M",
                         "overrides": {**DEBIAN_CLAMD, "AlertExceedsMax": "yes"}},
     ["cut_member"], ["MaxFileSize at least MaxScanSize"], ["AlertExceedsMax", "ScanArchive"]),
    ("clamav_defaults_alerting", {"overrides": {**CLAMAV_DEFAULTS, "AlertExceedsMax": "yes"}},
     ["cut_member"], ["MaxFileSize at least MaxScanSize"], ["AlertExceedsMax"]),
    ("no_archives", {"overrides": {"ScanArchive": "no"}},
     ["archive", "nested", "cut_member"], ["ScanArchive yes"], []),
])
def test_a_clamd_that_passes_what_it_skipped_is_named_with_the_settings(
        tmp_path, setup, options, clean, named, not_named):
    verdict = _check(tmp_path, **options)
    assert verdict.clean_canaries == clean, verdict.answers
    message = verdict.message()
    assert all(setting in message for setting in named), message
    assert not any(setting in message for setting in not_named), message


@pytest.mark.slow
def test_the_documented_fragment_fails_closed(tmp_path):
    fragment = docs_fragment()
    assert fragment["AlertExceedsMax"] == "yes"
    verdict = _check(tmp_path, stream_max_length=fragment["StreamMaxLength"], overrides=fragment)
    assert verdict.fails_closed, verdict.answers


@pytest.mark.slow
def test_the_scan_stage_refuses_the_attack_on_a_debian_clamd_and_rejects_it_on_ours(tmp_path,
                                                                                   clamd):
    debian = start_clamd(SIGNATURES, tmp_path / "debian", stream_max_length="25M",
                         overrides=DEBIAN_CLAMD)
    try:
        with pytest.raises(Failed) as caught:
            scan(attack_jpeg(), ClamdScanner(debian.url))
    finally:
        debian.stop()
    assert caught.value.reason == "scanner_misconfigured" and caught.value.retryable
    assert caught.value.details["canaries"]["nested"] == "stream: OK"
    with pytest.raises(Rejected) as rejected:
        scan(attack_jpeg(), ClamdScanner(clamd.url))
    assert rejected.value.reason in ("infected", "scan_limit_exceeded")
