"""The failures a user can fix, as one line and an exit status instead of a traceback.

Exit statuses (README, "Exit status"): 2 for a usage or configuration error, which
the same command repeats until it is fixed; 1 for a service that could not be reached
(the catalog, the scheduler), where the same command may work later, and for an asset
that ``failed``; 130 for an interrupted run.
"""

from __future__ import annotations

USAGE = 2
UNAVAILABLE = 1


def explain(error: BaseException) -> tuple[str, int] | None:
    """One line naming the cause, and the exit status; None for a bug (its traceback stays)."""
    import yaml

    if isinstance(error, yaml.MarkedYAMLError):
        return _yaml_line(error), USAGE
    if isinstance(error, (ValueError, FileNotFoundError, yaml.YAMLError)):
        return _one_line(error), USAGE
    if isinstance(error, RuntimeError) and _unavailable(error):
        return _one_line(error), UNAVAILABLE
    return None


def _unavailable(error: RuntimeError) -> bool:
    # Imported here: each pulls in a heavy module, and only a failing command needs them.
    from catalog.retry import CatalogUnavailable
    from cluster.bulk import ClusterLost
    from cluster.farm import SchedulerUnreachable

    return isinstance(error, (CatalogUnavailable, ClusterLost, SchedulerUnreachable))


def _yaml_line(error) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"{mark.name} line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
    problem = " ".join(filter(None, [error.context, error.problem]))
    return f"{where}: {problem}; fix the YAML syntax there"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
