"""Run one function on untrusted bytes in a throwaway child process with hard limits.

A native decoder that segfaults, aborts, spins or eats memory takes down only
the child; the caller gets a ``Rejected`` with a stable reason instead.

The child is a fresh interpreter started with ``subprocess`` and fed a pickle
on stdin, not a ``multiprocessing`` process: Dask's nanny starts workers as
daemonic processes, and ``multiprocessing`` refuses to start children from
those; ``fork`` from a threaded worker could also deadlock the child on a lock
some other thread held. ``subprocess`` uses ``posix_spawn``/``vfork`` and an
``exec``, so neither applies. The price is an interpreter start per call
(tens of milliseconds, plus whatever the function's module imports: about a
second for PyAV on a busy machine), so by default the child is forked from a
warm, single-threaded fork server started that same way (``forkserver``), which
has imported the function's module already. ``MEDIAFARM_SANDBOX_WARM=0`` starts
every child cold.
"""

from __future__ import annotations

import atexit
import dataclasses
import enum
import errno
import importlib
import io
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from typing import Any, Callable, TypeVar

from pipelines.outcome import Failed, Rejected, StageStop, clip
from pipelines.upload import forkserver

T = TypeVar("T")

# A result bigger than this is not a small dataclass: something went wrong.
MAX_RESULT_BYTES = 16 * 1024 * 1024
STDERR_TAIL = 2000

# The child reads its sys.path and limits from argv, then imports this module.
_BOOTSTRAP = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
              "from pipelines.upload.sandbox import _child_main; _child_main(json.loads(sys.argv[2]))")

# Builtins a result may name besides what pickle encodes natively.
_SAFE_BUILTINS = {"complex", "set", "frozenset", "bytearray", "range", "slice"}


def run_isolated(func: Callable[..., T], *args: Any, timeout: float, memory_bytes: int,
                 cpu_seconds: int) -> T:
    """Call ``func(*args)`` in a fresh child under address-space, CPU and wall-clock limits.

    ``func`` must be a module-level function the child can import. Its return
    value must be built from plain Python values and ``pipelines`` dataclasses
    or enums (see ``_ResultUnpickler``).
    """
    # Pickle in the parent so that a lambda or an unpicklable argument fails here, loudly.
    payload = pickle.dumps((func, args), protocol=pickle.HIGHEST_PROTOCOL)
    limits = {"memory_bytes": memory_bytes, "cpu_seconds": cpu_seconds}
    # Private scratch space for the child (its TMPDIR), removed by us even if the child is killed.
    scratch = tempfile.mkdtemp(prefix="mediafarm-sandbox-")
    try:
        with tempfile.TemporaryFile(dir=scratch) as stdin, \
                tempfile.TemporaryFile(dir=scratch) as stdout, \
                tempfile.TemporaryFile(dir=scratch) as stderr:
            # Files rather than pipes: nothing to drain, so no deadlock and no helper threads.
            stdin.write(payload)
            stdin.seek(0)
            del payload
            returncode, timed_out = _run_child(func.__module__, limits, scratch,
                                               (stdin, stdout, stderr), timeout)
            return _outcome(returncode, timed_out, stdout, stderr, timeout, cpu_seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_child(module: str, limits: dict, scratch: str, files: tuple, timeout: float
               ) -> tuple[int, bool]:
    # Absolute paths: the child runs in the scratch directory, where "" would mean something else.
    path = [os.path.abspath(entry) for entry in sys.path]
    # Each glibc malloc arena reserves 64 MiB of address space; with decoder
    # threads that alone can exhaust RLIMIT_AS before any real allocation.
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    # Dask's nanny gives workers MALLOC_TRIM_THRESHOLD_ to hand memory back to the OS. A fixed
    # threshold also turns off glibc's sliding mmap threshold, so a child would map and unmap
    # every frame-sized buffer, for every frame: 3.4x the page faults and about 8% more time
    # for a 1080p transcode. A throwaway child gives everything back when it exits anyway.
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    if os.environ.get("MEDIAFARM_SANDBOX_WARM", "1") != "0":
        server = _servers.take(env, path)
        try:
            return server.run(module, "pipelines.upload.sandbox:_child_main", limits, scratch,
                              files, timeout, _kill_group)
        except forkserver.ServerLost:
            server.close()
            for handle in files:  # start the cold child on clean files
                handle.seek(0)
                if handle is not files[0]:
                    handle.truncate()
        finally:
            _servers.give(server)
    return _run_cold(path, dict(env, TMPDIR=scratch), limits, scratch, files, timeout)


def _run_cold(path: list[str], env: dict, limits: dict, scratch: str, files: tuple,
              timeout: float) -> tuple[int, bool]:
    stdin, stdout, stderr = files
    argv = [sys.executable, "-c", _BOOTSTRAP, json.dumps(path), json.dumps(limits)]
    # A new session makes the child a process-group leader, so killpg also reaches anything it spawned.
    child = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                             cwd=scratch, start_new_session=True, close_fds=True)
    timed_out = False
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Runs on timeout, on success (stray grandchildren) and if the caller is interrupted.
        _kill_group(child.pid)
        child.wait()  # reap: never leave a zombie behind
    return child.returncode, timed_out


_servers = forkserver.Pool()
atexit.register(_servers.close)


def server_pids() -> set[int]:
    """The idle fork servers' process ids (children of this process that stay)."""
    return _servers.pids()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(returncode: int, timed_out: bool, stdout, stderr, timeout: float, cpu_seconds: int):
    if timed_out:
        raise Rejected("decode_timeout", f"decoding took longer than {timeout:g} s")
    if returncode < 0:
        signum = -returncode
        if signum == signal.SIGXCPU:
            raise Rejected("decode_timeout", f"decoding used more than {cpu_seconds} s of CPU")
        raise Rejected("decoder_crashed", f"{_signal_name(signum)} while decoding")
    size = stdout.seek(0, io.SEEK_END)
    if returncode != 0 or size == 0:
        raise Failed("internal_error", f"the sandbox exited with status {returncode}: "
                     f"{_tail(stderr) or 'no output'}", retryable=True)
    if size > MAX_RESULT_BYTES:
        raise Failed("internal_error", f"the sandbox returned {size} bytes; the limit is {MAX_RESULT_BYTES}")
    stdout.seek(0)
    try:
        record = _ResultUnpickler(stdout).load()
    except Exception as exc:  # a confused or compromised child: its bytes are not trusted
        raise Failed("internal_error", f"the sandbox returned an unreadable result: {exc}") from None
    return _unpack(record)


def _unpack(record):
    kind = record[0]
    if kind == "ok":
        return record[1]
    if kind == "stop":
        _, cls, reason, message, retryable, details = record
        raise cls(reason, message, retryable=retryable, details=details)
    if kind == "memory":
        raise Rejected("decoder_out_of_memory", f"decoding needed more memory than allowed: {record[1]}")
    if kind == "error":
        _, message, trace, transient = record
        # The child worked on local files only: what failed there fails the same way on every
        # try, unless the machine ran short of something (see _transient).
        raise Failed("internal_error", message, retryable=transient, details={"traceback": trace})
    raise Failed("internal_error", f"the sandbox returned an unknown record {kind!r}")


class _ResultUnpickler(pickle.Unpickler):
    """Unpickle what the child sent, naming only pipelines' dataclasses, enums and StageStops.

    The child has just parsed hostile bytes with native code; if that code was
    exploited, a free-form pickle would hand the attacker the worker too.
    """

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if module == "pipelines" or module.startswith("pipelines."):
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, (enum.Enum, StageStop))):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} may not appear in a sandbox result")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _tail(stream) -> str:
    stream.seek(0, io.SEEK_END)
    stream.seek(max(0, stream.tell() - STDERR_TAIL))
    lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


CAP_SYS_NICE = 23
PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_realtime() -> str:
    """Give up CAP_SYS_NICE for this process and everything it starts; say what was done.

    Run as root, SVT-AV1 (Debian's 1.4 and PyAV's 4.1 alike) gives its threads
    SCHED_FIFO priority 99, and PyAV's build also switches the thread that opens
    the encoder, whose later children inherit it. A real-time encode would starve
    everything else on the worker's machine (Dask's own heartbeats included).
    Without CAP_SYS_NICE (and with RLIMIT_RTPRIO 0, the default) those requests
    fail and SVT-AV1 carries on at normal priority. Capabilities are per thread:
    call this before starting any thread that starts processes or encoders (the
    sandbox child does, first thing).
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return "not Linux: left alone"
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(_LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return f"capget failed (errno {ctypes.get_errno()}): left alone"
    if not data[0].effective & (1 << CAP_SYS_NICE):
        return "no CAP_SYS_NICE to begin with"
    # The bounding set first (needs CAP_SETPCAP): exec'd children of root get only what it holds.
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) != 0:
        return f"PR_CAPBSET_DROP failed (errno {ctypes.get_errno()}): left alone"
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & ~(1 << CAP_SYS_NICE))
    if libc.capset(ctypes.byref(header), data) != 0:
        return f"capset failed (errno {ctypes.get_errno()}): only the bounding set dropped"
    return "CAP_SYS_NICE dropped: every encoder runs at normal priority"


# What a child can run short of that a later try may find again: disk, file handles, memory.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
                               errno.EAGAIN})


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def _cause(exc: BaseException) -> str:
    """The whole cause for the asset's message: each exception in the chain, all its lines, and
    where it was raised (the traceback itself goes to the stage run's details)."""
    parts: list[str] = []
    while exc is not None and len(parts) < 4:
        text = "".join(traceback.format_exception_only(exc)).strip()
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            text += f" (in {frames[-1].name}, {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"
        parts.append(text)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "; from ".join(parts)


def _child_main(limits: dict) -> None:
    """The child's side: apply limits, run the function, write one record to stdout, exit."""
    memory = limits["memory_bytes"]
    cpu = limits["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # SIGXCPU at the soft limit; the hard limit a second later is SIGKILL in case it is caught.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    # A core dump of a crashed decoder is slow to write and holds the hostile input.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    drop_realtime()
    # Keep the real stdout for the result; anything the function or a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        with open(0, "rb", closefd=False) as payload:  # fd 0, even in a forked child
            func, args = pickle.load(payload)
        record = ("ok", func(*args))
    except StageStop as stop:
        record = ("stop", type(stop), stop.reason, stop.message, stop.retryable, stop.details)
    except MemoryError as exc:
        record = ("memory", str(exc) or "MemoryError")
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which decides)
        record = ("error", clip(_cause(exc)), traceback.format_exc(limit=-8), _transient(exc))
    try:
        data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        data = pickle.dumps(("memory", "MemoryError while returning the result"))
    except Exception as exc:  # noqa: BLE001  (an unpicklable return value is our bug)
        data = pickle.dumps(("error", f"the result cannot be pickled: {exc}", "", False))
    out.write(data)
    out.flush()
    # Skip interpreter teardown: native libraries' destructors are one more place to crash.
    os._exit(0)
