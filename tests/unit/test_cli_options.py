"""The command line's global options work before and after the command, as users type them."""

from __future__ import annotations

import pytest

from cluster.cli.main import parse_args


@pytest.mark.parametrize("argv", [
    ["--config", "x.yml", "ingest", "a.jpg"],
    ["ingest", "--config", "x.yml", "a.jpg"],
    ["ingest", "a.jpg", "--config", "x.yml"],
])
def test_config_works_before_or_after_the_command(argv):
    args = parse_args(argv)
    assert args.config == "x.yml" and args.sources == ["a.jpg"]


def test_config_reaches_nested_commands():
    assert parse_args(["token", "list", "--config", "x.yml"]).config == "x.yml"


def test_without_config_there_is_none():
    assert parse_args(["status", "--job", "j"]).config is None


@pytest.mark.parametrize("argv, verbosity", [
    (["ingest", "a.jpg"], 0),
    (["-v", "ingest", "a.jpg"], 1),
    (["ingest", "a.jpg", "-vv"], 2),
    (["ingest", "-q", "a.jpg"], -1),
    (["-q", "db", "upgrade"], -1),
])
def test_verbosity_flags_work_anywhere(argv, verbosity):
    assert parse_args(argv).verbosity == verbosity


def test_quiet_and_verbose_together_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["ingest", "-q", "-v", "a.jpg"])
    assert exit_.value.code == 2
