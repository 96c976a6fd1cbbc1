"""Every ``mediafarm`` command names a function that exists (main.py imports each one only when it runs)."""

from __future__ import annotations

from cluster.cli.main import build_parser, handler
from cluster.cli.options import walk_parsers


def test_every_command_names_a_function():
    commands = {each.prog: each.get_default("run") for each, _ in walk_parsers(build_parser())
                if each.get_default("run")}
    assert len(commands) == 30, sorted(commands)
    for prog, name in commands.items():
        assert callable(handler(name)), f"{prog}: {name}"
