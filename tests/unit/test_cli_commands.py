"""Every ``mediafarm`` command names a function that exists (main.py imports each one only when it runs)."""

from __future__ import annotations

from cluster.cli.main import build_parser, handler
from cluster.cli.options import walk_parsers


def test_every_command_names_a_function():
    commands = {each.prog: each.get_default("run") for each, _ in walk_parsers(build_parser())
                if each.get_default("run")}
    assert len(commands) == 31, sorted(commands)
    for prog, name in commands.items():
        assert callable(handler(name)), f"{prog}: {name}"


def test_worker_passes_a_fixed_dashboard_address_on_for_its_metrics():
    from cluster.cli.worker import worker_command

    args = build_parser().parse_args(["worker", "tcp://s:8786", "--nworkers", "1",
                                      "--dashboard-address", ":8790"])
    command = worker_command(args)
    assert command[command.index("--dashboard-address") + 1] == ":8790"
    default = worker_command(build_parser().parse_args(["worker", "tcp://s:8786"]))
    assert "--dashboard-address" not in default  # Dask's own: a free port per worker


def test_the_scrub_and_gc_commands_default_as_their_modules_do():
    # The commands keep their own copies, so that `mediafarm --help` imports neither module.
    from cluster import gc
    from cluster.cli import gc_command, scrub_command
    from cluster.storage import scrub

    assert scrub_command.SCRUBBED == scrub.SCRUBBED
    assert gc_command.DEFAULT_GRACE_S == gc.DEFAULT_GRACE_S
    args = build_parser().parse_args(["scrub"])
    assert (args.stores, args.orphan_grace, args.sample, args.limit) == (
        list(scrub.SCRUBBED), gc.DEFAULT_GRACE_S, None, None)
