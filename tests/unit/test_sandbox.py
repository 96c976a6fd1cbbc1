"""The sandbox: values and StageStops come back; crashes, hangs and hogs become rejections."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pipelines.outcome import Failed, Rejected
from pipelines.upload.sandbox import run_isolated, server_pids

LIMITS = {"timeout": 10.0, "memory_bytes": 512 * 1024 * 1024, "cpu_seconds": 10}


# The children import these by name, so they live at module level.

def add(a: int, b: int) -> int:
    return a + b


def echo_bytes(data: bytes) -> tuple[int, str]:
    return len(data), data[:5].decode()


def reject() -> None:
    raise Rejected("corrupt", "the moov atom is missing", details={"at": 3})


def fail() -> None:
    raise Failed("store_unavailable", "the store is down", retryable=True)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def abort() -> None:
    os.abort()


def sleep_forever() -> None:
    time.sleep(60)


def spin() -> None:
    while True:
        pass


def allocate_2_gib() -> int:
    return len(bytearray(2 * 1024 ** 3))


def boom() -> None:
    raise KeyError("no such thing")


def undecodable() -> None:
    b"Gr\xf6\xdfe".decode("utf-8")


def mismatch() -> None:
    # As PyAV's AudioResampler fails on a frame whose rate changed, inside a decode loop's error.
    try:
        raise ValueError("Frame does not match AudioResampler setup.")
    except ValueError as exc:
        error = RuntimeError("encoding the audio failed\nat frame 431 of 1200")
        error.add_note("the source changed from 44100 Hz mono to 48000 Hz stereo")
        raise error from exc


def disk_full() -> None:
    import errno
    raise OSError(errno.ENOSPC, "No space left on device")


def shout_and_return() -> str:
    print("stray output on stdout must not corrupt the result")
    os.write(1, b"nor must raw writes to fd 1\n")
    return "clean"


def write_scratch_file() -> str:
    import tempfile
    handle, path = tempfile.mkstemp()
    os.write(handle, b"x")
    os.close(handle)
    return path


def return_a_function():
    return os.system  # the parent must refuse to unpickle a callable


def children() -> list[int]:
    """Our own direct children, zombies included, read from /proc."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may contain spaces; the ppid follows it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True, params=["warm", "cold"])
def mode(request, monkeypatch) -> str:
    """Every test runs with children forked from the warm fork server and started cold."""
    monkeypatch.setenv("MEDIAFARM_SANDBOX_WARM", "1" if request.param == "warm" else "0")
    return request.param


@pytest.fixture(autouse=True)
def no_children_left(mode):
    before = set(children())
    yield
    # The idle fork servers stay (that is their point); nothing else may.
    assert set(children()) - server_pids() <= before, "a sandbox child was left running or unreaped"


def rejection(func, *args, **limits) -> Rejected:
    with pytest.raises(Rejected) as caught:
        run_isolated(func, *args, **{**LIMITS, **limits})
    return caught.value


def test_returns_the_functions_value():
    assert run_isolated(add, 2, 3, **LIMITS) == 5


def test_bytes_arguments_reach_the_child():
    data = b"hello" + os.urandom(3 * 1024 * 1024)
    assert run_isolated(echo_bytes, data, **LIMITS) == (len(data), "hello")


def test_rejected_comes_back_as_the_same_class_with_reason_and_details():
    stop = rejection(reject)
    assert (stop.reason, stop.message, stop.details) == ("corrupt", "the moov atom is missing", {"at": 3})


def test_failed_comes_back_as_failed_and_keeps_retryable():
    with pytest.raises(Failed) as caught:
        run_isolated(fail, **LIMITS)
    assert (caught.value.reason, caught.value.retryable) == ("store_unavailable", True)


def test_segfault_is_decoder_crashed():
    stop = rejection(segfault)
    assert (stop.reason, stop.message) == ("decoder_crashed", "SIGSEGV while decoding")


def test_abort_is_decoder_crashed():
    assert rejection(abort).message == "SIGABRT while decoding"


def test_wall_clock_timeout_kills_the_child_promptly():
    started = time.monotonic()
    assert rejection(sleep_forever, timeout=1).reason == "decode_timeout"
    assert time.monotonic() - started < 3


def test_cpu_limit_is_decode_timeout():
    stop = rejection(spin, cpu_seconds=1, timeout=20)
    assert (stop.reason, stop.message) == ("decode_timeout", "decoding used more than 1 s of CPU")


def test_allocating_past_the_memory_limit_is_rejected():
    stop = rejection(allocate_2_gib, memory_bytes=256 * 1024 * 1024)
    assert stop.reason in {"decoder_out_of_memory", "decoder_crashed"}


@pytest.mark.parametrize("func", [boom, undecodable])
def test_other_exceptions_are_internal_errors_that_no_retry_mends(func):
    # The child ran on local files only: what failed there fails the same way on every try.
    with pytest.raises(Failed) as caught:
        run_isolated(func, **LIMITS)
    assert caught.value.reason == "internal_error" and not caught.value.retryable
    assert func.__name__ in caught.value.details["traceback"]


def test_an_internal_error_keeps_its_whole_cause():
    with pytest.raises(Failed) as caught:
        run_isolated(mismatch, **LIMITS)
    message = caught.value.message
    assert not caught.value.retryable
    for part in ("RuntimeError: encoding the audio failed", "at frame 431 of 1200",
                 "44100 Hz mono to 48000 Hz stereo", "in mismatch, test_sandbox.py:",
                 "ValueError: Frame does not match AudioResampler setup."):
        assert part in message, part


def test_running_short_of_disk_is_worth_a_retry():
    with pytest.raises(Failed) as caught:
        run_isolated(disk_full, **LIMITS)
    assert caught.value.reason == "internal_error" and caught.value.retryable


def test_stray_stdout_does_not_corrupt_the_result():
    assert run_isolated(shout_and_return, **LIMITS) == "clean"


def test_child_scratch_space_is_removed(tmp_path):
    path = run_isolated(write_scratch_file, **LIMITS)
    assert "mediafarm-sandbox-" in path and not os.path.exists(path)


def test_a_result_naming_arbitrary_callables_is_refused():
    with pytest.raises(Failed) as caught:
        run_isolated(return_a_function, **LIMITS)
    assert caught.value.reason == "internal_error" and "may not appear" in caught.value.message


def test_lambdas_fail_in_the_parent():
    with pytest.raises(Exception):
        run_isolated(lambda: 1, **LIMITS)


def test_parent_carries_on_after_crashes_and_neighbours_finish():
    outcomes = []
    for func in (add, segfault, add, sleep_forever, add):
        try:
            outcomes.append(run_isolated(func, *((1, 1) if func is add else ()), **{**LIMITS, "timeout": 1}))
        except Rejected as stop:
            outcomes.append(stop.reason)
    assert outcomes == [2, "decoder_crashed", 2, "decode_timeout", 2]


def own_pid_and_parent() -> tuple[int, int]:
    return os.getpid(), os.getppid()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.parametrize("mode", ["warm"], indirect=True)  # only the warm path has a server
def test_warm_children_are_forked_by_a_single_threaded_server(mode):
    first_pid, first_parent = run_isolated(own_pid_and_parent, **LIMITS)
    second_pid, second_parent = run_isolated(own_pid_and_parent, **LIMITS)
    assert first_parent == second_parent in server_pids()  # one server, reused
    assert first_pid != second_pid != second_parent         # a fresh child per call
    # Forking is only safe from a process with one thread; importing PyAV and libvips
    # (what the video and probe functions import) must not have started any.
    from pipelines.transform.encode_loop import file_duration
    with pytest.raises(Exception):
        run_isolated(file_duration, "/nonexistent.mp4", **LIMITS)
    assert threads_of(second_parent) == 1


@pytest.mark.parametrize("mode", ["warm"], indirect=True)
def test_a_killed_server_costs_one_warm_start_not_the_call(mode):
    _, server = run_isolated(own_pid_and_parent, **LIMITS)
    os.kill(server, signal.SIGKILL)
    os.waitpid(server, 0)
    assert run_isolated(add, 20, 22, **LIMITS) == 42
    assert server not in server_pids()


def malloc_settings() -> tuple[str | None, str | None]:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_ARENA_MAX")


def test_children_keep_glibcs_sliding_mmap_threshold(monkeypatch):
    # Dask's nanny sets this in every worker; a child that kept it would map and unmap
    # each frame-sized buffer for every frame it decodes.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    for server in server_pids():  # so that the warm path starts a server with this environment
        os.kill(server, signal.SIGKILL)
        os.waitpid(server, 0)
    assert run_isolated(malloc_settings, **LIMITS) == (None, "2")


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


def test_children_cannot_make_themselves_real_time():
    # SVT-AV1 asks for SCHED_FIFO 99 when it can; a child must never hold that power.
    if not effective_capabilities() & (1 << 23):
        pytest.skip("this process has no CAP_SYS_NICE to give up (not root)")
    assert not run_isolated(effective_capabilities, **LIMITS) & (1 << 23)
    assert effective_capabilities() & (1 << 23)  # the worker itself keeps its own
