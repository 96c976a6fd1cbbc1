"""The canaries' judgement and how long a verdict is kept, with a scripted stand-in for clamd."""

from __future__ import annotations

import io
import zipfile

import pytest

from pipelines.outcome import Failed
from pipelines.upload import scanner_check
from pipelines.upload.scanner_check import EICAR, _Verdicts, canaries, judge

ALERT = "stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND"


class ScriptedClamd:
    """Answers every canary with ``answer`` (or raises it) and counts the scans."""

    url = "tcp://scripted:3310"

    def __init__(self, answer: str | Exception) -> None:
        self.answer, self.scans = answer, 0

    def instream(self, data: bytes) -> str:
        self.scans += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_canaries_hide_eicar_where_only_unpacking_finds_it():
    by_name = {c.name: c.data for c in canaries()}
    assert list(by_name) == ["archive", "nested", "cut_member"]
    for data in by_name.values():
        assert EICAR not in data  # deflated: a raw scan of the bytes finds nothing
    depth, data = 0, by_name["nested"]
    while data != EICAR:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(archive.namelist()[0])
        depth += 1
    assert depth == scanner_check.NESTING > 17  # ClamAV's default MaxRecursion
    with zipfile.ZipFile(io.BytesIO(by_name["cut_member"])) as archive:
        member = archive.read("member.bin")
    assert len(member) > scanner_check.CUT_MEMBER_BYTES and not any(member[:1 << 20])
    assert len(by_name["cut_member"]) < 200_000  # small on the wire


def test_clean_answers_name_the_settings_and_alerts_pass():
    names = [c.name for c in canaries()]
    closed = judge("tcp://c:1", dict.fromkeys(names, ALERT))
    assert closed.fails_closed and closed.settings == []
    refused = judge("tcp://c:1", dict.fromkeys(names, "INSTREAM size limit exceeded. ERROR"))
    assert refused.fails_closed
    stock = judge("tcp://c:1", {"archive": "stream: Eicar-Test-Signature FOUND",
                                "nested": "stream: OK", "cut_member": "stream: OK"})
    assert stock.clean_canaries == ["nested", "cut_member"]
    assert stock.message().startswith("clamd at tcp://c:1 answers OK for content it did not scan")
    assert "AlertExceedsMax yes; MaxFileSize at least MaxScanSize" in stock.message()


@pytest.mark.parametrize(("answer", "reason"), [("", "scanner_unavailable"),
                                                 ("stream: lstat() failed ERROR", "scanner_error")])
def test_an_answer_that_says_nothing_is_no_verdict(answer, reason):
    with pytest.raises(Failed) as caught:
        judge("tcp://c:1", {"archive": answer})
    assert caught.value.reason == reason and caught.value.retryable


def test_a_fail_closed_verdict_is_kept_five_minutes_and_a_fail_open_one_thirty_seconds():
    clock = Clock()
    verdicts = _Verdicts(clock)
    good = ScriptedClamd(ALERT)
    assert verdicts.check(good).fails_closed and good.scans == 3
    clock.now += scanner_check.OK_TTL_S - 1
    verdicts.check(good)
    assert good.scans == 3
    clock.now += 1
    verdicts.check(good)
    assert good.scans == 6

    bad = ScriptedClamd("stream: OK")
    verdicts.forget(bad.url)
    assert not verdicts.check(bad).fails_closed
    clock.now += scanner_check.MISCONFIGURED_TTL_S
    verdicts.check(bad)
    assert bad.scans == 6


def test_no_verdict_is_kept_while_clamd_is_down_and_forget_drops_one():
    verdicts = _Verdicts(Clock())
    down = ScriptedClamd(Failed("scanner_unavailable", "refused", retryable=True))
    for _ in range(2):
        with pytest.raises(Failed):
            verdicts.check(down)
    assert down.scans == 2
    up = ScriptedClamd(ALERT)
    verdicts.check(up)
    verdicts.forget(up.url)
    verdicts.check(up)
    assert up.scans == 6


def test_a_verdict_made_elsewhere_is_adopted_for_as_long_as_one_made_here():
    """The farm checks clamd once while its cluster starts; each worker adopts that verdict
    (cluster/worker_plugin.py) instead of scanning the canaries again."""
    clock = Clock()
    farm_side, worker_side = _Verdicts(clock), _Verdicts(clock)
    clamd = ScriptedClamd(ALERT)
    worker_side.adopt(farm_side.check(clamd))
    assert worker_side.check(clamd).fails_closed and clamd.scans == 3  # the farm's three only
    clock.now += scanner_check.OK_TTL_S
    worker_side.check(clamd)
    assert clamd.scans == 6  # expired as its own would: checked again here

    open_ = ScriptedClamd("stream: OK")
    worker_side.adopt(farm_side.check(open_))
    assert not worker_side.check(open_).fails_closed and open_.scans == 3
    clock.now += scanner_check.MISCONFIGURED_TTL_S
    worker_side.check(open_)
    assert open_.scans == 6


def test_the_scan_stage_refuses_a_clamd_that_fails_open(monkeypatch):
    monkeypatch.setattr(scanner_check, "_verdicts", _Verdicts(Clock()))
    with pytest.raises(Failed) as caught:
        scanner_check.require_fails_closed(ScriptedClamd("stream: OK"))
    assert caught.value.reason == "scanner_misconfigured" and caught.value.retryable
    assert caught.value.details["canaries"]["nested"] == "stream: OK"
