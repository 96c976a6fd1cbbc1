"""Progress of long commands, bulk partition sizes and the numbers people read (issue 16)."""

from __future__ import annotations

import io
import re
from collections import Counter

import pytest

from cluster.bulk import partition_size
from cluster.cli.progress import CommandProgress
from cluster.cli.report import human_bytes, human_seconds

PLAIN_LINE = re.compile(r"^ingest: (\d+)/(\d+|\?) .*?, ([\d.]+) assets/s, ETA (\S+)$")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("total", "threads", "cap", "expected"), [
    (20, 2, 200, 5),        # the case: 4 partitions of 5, not one of 20
    (1000, 2, 200, 200),    # large manifests keep the configured size
    (3, 2, 200, 1),         # fewer assets than 2 x threads: one asset per partition
    (0, 4, 200, 200),
    (None, 4, 200, 200),    # size unknown: the configured size
    (10_000, 16, 50, 50),
])
def test_partition_size_gives_every_worker_thread_two_partitions(total, threads, cap, expected):
    size = partition_size(total, threads, cap)
    assert size == expected
    if total and total >= 2 * threads:
        assert -(-total // size) >= 2 * threads


def test_plain_lines_come_at_the_start_every_interval_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    with CommandProgress("ingest", out=out, interval=10, clock=clock, live=False) as progress:
        for done in range(0, 31):
            clock.now = float(done)
            progress(done, 30, Counter(ready=done))
    lines = out.getvalue().splitlines()
    assert [PLAIN_LINE.match(line).group(1) for line in lines] == ["0", "10", "20", "30"]
    first, *_, last = lines
    assert first.endswith("0.0 assets/s, ETA ?")
    assert "(ready=30)" in last and last.endswith("1.0 assets/s, ETA 0s")
    assert "ETA 10s" in lines[2]


def test_an_unknown_total_still_ends_with_a_line_of_the_final_counts():
    out, clock = io.StringIO(), Clock()
    with CommandProgress("ingest", out=out, interval=10, clock=clock, live=False) as progress:
        progress(0, None, Counter())
        clock.now = 4
        progress(8, None, Counter(ready=7, failed=1))
    last = out.getvalue().splitlines()[-1]
    assert PLAIN_LINE.match(last) and last.startswith("ingest: 8/? (failed=1 ready=7)")
    assert "2.0 assets/s" in last


def test_a_terminal_gets_a_live_bar_with_counts():
    out, clock = io.StringIO(), Clock()
    with CommandProgress("backfill", out=out, clock=clock, live=True) as progress:
        progress(0, 4, Counter())
        progress(4, 4, Counter(ready=4))
    text = out.getvalue()
    assert "backfill" in text and "4/4" in text and "ready=4" in text


@pytest.mark.parametrize(("value", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                             (5 * 1024**3, "5.0 GiB"), (123456.789, "120.6 KiB")])
def test_bytes_are_shown_with_binary_units(value, text):
    assert human_bytes(value) == text


@pytest.mark.parametrize(("value", "text"), [(0.04, "0.0s"), (2.345, "2.3s"), (75.2, "1m15s"),
                                             (3 * 3600 + 62, "3h01m")])
def test_durations_are_rounded_to_what_people_read(value, text):
    assert human_seconds(value) == text
