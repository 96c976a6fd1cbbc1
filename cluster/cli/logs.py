"""How much the command line says: warnings by default, Dask's own log only when asked for."""

from __future__ import annotations

import logging
import os
import sys

# By verbosity: -1 (-q), 0 (default), 1 (-v); -vv and more say everything.
_OURS = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
_DASK = {-1: "error", 0: "error", 1: "warning"}
# The workers of a LocalCluster: what they have to say reaches the command as results or
# errors of its own, and what is left are races of Dask's shutdown (a heartbeat that meets
# a closed scheduler, logged as an error with a CommClosedError traceback).
_DASK_WORKERS = {-1: "critical", 0: "critical", 1: "warning"}


def configure(verbosity: int) -> None:
    """Set up logging for a command run at ``verbosity`` (-1 for -q, 1 per -v)."""
    logging.basicConfig(level=_OURS.get(verbosity, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # Dask narrates every worker's start and stop at INFO, and sets its loggers' levels
    # from its config when `distributed` is imported: through the environment for the
    # worker processes a LocalCluster spawns, through the config for this one.
    os.environ["DASK_LOGGING__DISTRIBUTED"] = _DASK_WORKERS.get(verbosity, "info")
    level = _DASK.get(verbosity, "info")
    import dask.config

    dask.config.set({"logging.distributed": level})
    if "distributed" in sys.modules:  # imported already: its loggers are set
        logging.getLogger("distributed").setLevel(level.upper())
