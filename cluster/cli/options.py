"""Options every ``mediafarm`` command takes, before or after the command's name, and --version."""

from __future__ import annotations

import argparse

from cluster.config import Settings, load_settings


def add_global_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and every command under it ``--config``, ``-v`` and ``-q``.

    argparse reads an option only where it is declared, so ``mediafarm ingest --config
    x.yml`` would be refused with the option on the top parser alone. The commands'
    copies default to SUPPRESS, so a value given before the command is kept.
    """
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the versions of Mediafarm, libvips and FFmpeg, and exit")
    for each, top in walk_parsers(parser):
        keep = argparse.SUPPRESS
        each.add_argument("--config", default=None if top else keep,
                          help="YAML configuration file (default: $MEDIAFARM_CONFIG)")
        verbosity = each.add_mutually_exclusive_group()
        verbosity.add_argument("-v", "--verbose", dest="verbosity", action="count",
                               default=0 if top else keep,
                               help="say more (-vv: Dask's own log too)")
        verbosity.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                               default=0 if top else keep, help="errors only")
    return parser


def command_settings(args: argparse.Namespace) -> Settings:
    """The configuration a command runs with: ``--config``'s file, the environment, the defaults."""
    return load_settings(config_file=args.config)


def positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def walk_parsers(parser: argparse.ArgumentParser, top: bool = True):
    """``parser`` and every command's parser under it, each with whether it is the top one."""
    yield parser, top
    for action in parser._actions:  # argparse has no public walk of its sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from walk_parsers(sub, top=False)


def versions() -> str:
    """One line: the package's version and those of the libraries that shape its output."""
    from importlib.metadata import PackageNotFoundError, version

    import av

    from pipelines.vips import tool_versions

    try:
        ours = version("mediafarm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "unknown (not installed)"
    libvips = tool_versions()["libvips"]
    return f"mediafarm {ours}, libvips {libvips}, FFmpeg {av.ffmpeg_version_info}"


class _Version(argparse.Action):
    # argparse's own "version" action wants the text up front: that would import
    # pyvips and PyAV for every command, not just for --version.
    def __call__(self, parser, namespace, values, option_string=None):
        print(versions())
        parser.exit()
