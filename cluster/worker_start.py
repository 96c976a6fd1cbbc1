"""How the farm's own LocalCluster starts its worker processes: forked, not spawned.

Dask's nannies spawn each worker by default: a fresh interpreter that imports
distributed, and then the stage modules (SQLAlchemy, botocore, PyAV, libvips, the
catalog) when its first task arrives, about 1.5 s of CPU per worker, again at every
restart. With multiprocessing's ``forkserver`` method one server process imports them
once, and every worker, restarts included, is a fork of it. The server starts as soon
as a farm knows it will start a cluster of its own, and a command starts it before it
imports the farm, so that the server's imports run beside the rest of the start
(docs/benchmarks.md, "Start-up").

The server is started with the client's environment, what Dask's nanny sets before
starting a worker (``pre_spawn_environ``) and SIGINT blocked, as the workers were
(``cluster.interrupt``); workers forked later get that environment, not the client's
later changes (settings reach workers as task arguments, not through the
environment). It imports no user code (``__main__`` is not preloaded), so a script
without a ``__main__`` guard is safe here as with spawn (``cluster.script_workers``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os

from cluster.interrupt import workers_ignore_ctrl_c

# What a worker imports to run the stages and the worker plugin.
PRELOAD = ["distributed", "cluster.tasks", "cluster.bulk", "cluster.worker_plugin"]


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows


def start_server() -> None:
    """Start the fork server now, in the background: it imports the stages meanwhile."""
    if available():
        # As Dask's nanny does before it starts a worker, for good: forks never start again.
        os.environ.update(pre_spawn_environ())
        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
        with workers_ignore_ctrl_c():
            multiprocessing.forkserver.ensure_running()


def pre_spawn_environ() -> dict[str, str]:
    """What Dask's nanny puts in its environment before it starts a worker process: what
    must be set when a process starts (glibc reads ``MALLOC_TRIM_THRESHOLD_`` then,
    OpenBLAS its thread count at import) and Dask's fixed ``PYTHONHASHSEED``, so that
    every worker hashes alike. The server takes them at its start, and its forks with it."""
    import dask.config
    import distributed  # noqa: F401 - registers the distributed.* defaults in Dask's config

    wanted = dask.config.get("distributed.nanny.pre-spawn-environ")
    env = {name: os.environ.get(name, str(value)) for name, value in wanted.items()
           if value is not None}
    if env.get("PYTHONHASHSEED") in (None, "0"):
        env["PYTHONHASHSEED"] = "6640"  # Dask's own choice
    return env


def fork_workers() -> None:
    """Dask workers started from this process from now on are forks of the server, which
    starts now if it has not yet."""
    if not available():
        return
    import dask
    import distributed.utils

    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    # Dask sets its own list once per process unless told it has (importing pandas here
    # to offer it to workers that never use it); were the flag renamed, Dask's list would
    # win and workers would import the stages on their first task again.
    distributed.utils._forkserver_preload_set = True
    start_server()
