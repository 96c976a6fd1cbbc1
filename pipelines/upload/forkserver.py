"""Warm sandbox children: a single-threaded server process that forks them on request.

Starting a fresh interpreter and importing PyAV costs about half a second to a
second and a half on a busy 2-core machine, and a video asset runs three
sandboxed calls (probe, transcode, poster). A fork server pays that once per
worker thread: it is started like a cold child (``subprocess``, ``exec``, so the
Dask worker's threads and locks never reach it), imports the called function's
module in itself, and ``fork`` s one child per call. The server never runs a
thread of its own or touches untrusted bytes, so forking it is safe, and each
child is exactly as isolated as a cold one: its own process and session,
limits set before it reads its input, and killed with its process group.

Protocol, over a Unix socket pair: the caller sends one JSON request with the
child's stdin, stdout and stderr as passed file descriptors; the server forks,
answers ``{"pid": ...}`` at once (so the caller can kill the group on a
timeout), then ``{"status": ...}`` when the child is reaped. A server that goes
away mid-call costs only that call's warm start: the caller starts over cold.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_BOOTSTRAP = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
              "from pipelines.upload.forkserver import serve; serve(int(sys.argv[2]))")
_MESSAGE_BYTES = 4096


class ServerLost(Exception):
    """The fork server died or spoke nonsense; the call can be made cold instead."""


class ForkServer:
    """The caller's handle on one server process; one call at a time."""

    def __init__(self, env: dict, path: list[str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, json.dumps(path), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                cwd="/", start_new_session=True)
        finally:
            theirs.close()
        self.sock = ours
        self._pending = b""

    def run(self, preload: str, main: str, limits: dict, scratch: str, files,
            timeout: float, kill_group: Callable[[int], None]) -> tuple[int, bool]:
        """Fork a child that runs ``main(limits)`` ("module:function") with ``files`` as its
        stdin, stdout and stderr, ``preload`` imported first; (returncode, timed_out)."""
        request = json.dumps({"preload": preload, "main": main, "limits": limits,
                              "scratch": scratch}).encode()
        try:
            self.sock.settimeout(30)
            socket.send_fds(self.sock, [request], [f.fileno() for f in files])
            pid = self._receive()["pid"]
        except (OSError, KeyError, ValueError) as exc:
            raise ServerLost(str(exc)) from exc
        timed_out = False
        try:
            self.sock.settimeout(timeout)
            try:
                reply = self._receive()
            except TimeoutError:
                timed_out = True
                kill_group(pid)
                self.sock.settimeout(30)
                reply = self._receive()
        except (OSError, KeyError, ValueError) as exc:
            kill_group(pid)
            raise ServerLost(str(exc)) from exc
        finally:
            kill_group(pid)  # stray grandchildren, as for a cold child
        return os.waitstatus_to_exitcode(reply["status"]), timed_out

    def _receive(self) -> dict:
        """One newline-ended JSON message (a stream socket may deliver two at once)."""
        while b"\n" not in self._pending:
            data = self.sock.recv(_MESSAGE_BYTES)
            if not data:
                raise ValueError("the fork server closed the connection")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()  # the server sees EOF and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class Pool:
    """Idle servers of this process, one per concurrent caller at most."""

    def __init__(self) -> None:
        self._idle: list[ForkServer] = []
        self._lock = threading.Lock()
        self._owner = os.getpid()

    def take(self, env: dict, path: list[str]) -> ForkServer:
        with self._lock:
            if self._owner != os.getpid():  # forked: the servers belong to our parent
                self._idle, self._owner = [], os.getpid()
            while self._idle:
                server = self._idle.pop()
                if server.alive:
                    return server
        return ForkServer(env, path)

    def give(self, server: ForkServer) -> None:
        if not server.alive:
            return
        with self._lock:
            self._idle.append(server)

    def pids(self) -> set[int]:
        with self._lock:
            return {s.process.pid for s in self._idle}

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for server in idle:
            server.close()


# -- the server's side ---------------------------------------------------------------------

def serve(fd: int) -> None:
    """Answer fork requests until the caller closes the socket or dies."""
    sock = socket.socket(fileno=fd)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MESSAGE_BYTES, 3)
        except OSError:
            return
        if not message:
            return
        request = json.loads(message)
        # Imported here, before the fork, so that every later child starts warm.
        importlib.import_module(request["preload"])
        module, function = request["main"].split(":")
        main = getattr(importlib.import_module(module), function)
        pid = os.fork()
        if pid == 0:
            _become_child(sock, fds, request["scratch"])
            main(request["limits"])  # exits the process itself
            os._exit(70)
        for descriptor in fds:
            os.close(descriptor)
        sock.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        status = _reap(pid, sock)
        if status is None:
            return  # the caller is gone, and so is its child
        sock.sendall(json.dumps({"status": status}).encode() + b"\n")


def _reap(pid: int, sock: socket.socket) -> int | None:
    """Wait for the child; if the caller goes away meanwhile, kill the child and say None.

    (Not PR_SET_PDEATHSIG on the server: Linux ties it to the *thread* that started
    the server, and a worker thread may end long before its process.)
    """
    with os.fdopen(os.pidfd_open(pid), "rb", buffering=0) as child:
        while True:
            ready, _, _ = select.select([child, sock], [], [])
            if child in ready:
                return os.waitpid(pid, 0)[1]
            if not sock.recv(1, socket.MSG_PEEK):  # EOF: the caller died
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                return None


def _become_child(sock: socket.socket, fds: list[int], scratch: str) -> None:
    sock.close()
    os.setsid()  # its own process group, which the caller kills when it is done
    _die_with_parent()
    for target, descriptor in enumerate(fds):
        os.dup2(descriptor, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.chdir(scratch)
    os.environ["TMPDIR"] = scratch
    import tempfile
    tempfile.tempdir = None  # computed again from TMPDIR on first use
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _die_with_parent() -> None:
    """SIGKILL the child when the server dies (Linux): nothing outlives a killed worker."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
