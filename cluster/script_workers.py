"""Let a plain script start a farm: Dask's worker processes must not run the user's script again.

multiprocessing's ``spawn`` start method makes every child import the parent's
``__main__`` (as ``__mp_main__``) so that functions pickled by reference resolve
there. A script that says ``with Farm() as farm:`` at module level, without an
``if __name__ == "__main__":`` guard, then starts a cluster inside each worker
while it bootstraps: the workers die, and the parent waits for them forever.
Dask's workers need nothing from ``__main__`` (cloudpickle sends functions defined
there by value), so the processes Dask's nannies start leave it out. Every other
process, the user's own multiprocessing pools included, is started as before.
"""

from __future__ import annotations

import multiprocessing.spawn as spawn
import threading

# The name distributed's Nanny gives the worker processes it starts.
DASK_WORKER_PROCESS = "Dask Worker process"
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_lock = threading.Lock()
_installed = False


def without_main(data: dict) -> dict:
    """Spawn preparation data that does not import the parent's ``__main__``."""
    return {key: value for key, value in data.items() if key not in _MAIN_KEYS}


def install() -> None:
    """From now on, Dask worker processes started from this process skip ``__main__``."""
    global _installed
    with _lock:
        if _installed:
            return
        original = spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict:
            data = original(name)
            return without_main(data) if name.startswith(DASK_WORKER_PROCESS) else data

        # popen_spawn_posix and popen_forkserver look the function up on the module per start.
        spawn.get_preparation_data = get_preparation_data
        _installed = True
