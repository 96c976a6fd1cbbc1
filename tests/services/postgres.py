"""Find or start a PostgreSQL server for tests and hand out scratch databases."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

URL_ENV = "MEDIAFARM_TEST_DATABASE_URL"
THROWAWAY_ENV = "MEDIAFARM_TEST_THROWAWAY_PG"
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432
# Debian's server packages create this account; initdb and postgres refuse to run as root.
SERVER_ACCOUNT = "postgres"


@contextmanager
def server_url() -> Iterator[str]:
    """Yield a base SQLAlchemy URL of a PostgreSQL server that answers."""
    configured = os.environ.get(URL_ENV)
    if configured:
        yield _normalise(configured)
        return
    if os.environ.get(THROWAWAY_ENV) != "1":
        user = _local_server_user()
        if user is not None:
            yield f"postgresql+psycopg://{user}@{LOCAL_HOST}:{LOCAL_PORT}/postgres"
            return
    with _throwaway_cluster() as url:
        yield url


@contextmanager
def scratch_database(base_url: str) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, then drop it."""
    base = make_url(base_url)
    name = f"mediafarm_test_{secrets.token_hex(6)}"
    admin = _conninfo(base_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            # Leaked engines or pools would otherwise make DROP DATABASE fail.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _normalise(url: str) -> str:
    """Make a libpq-style URL name the psycopg 3 SQLAlchemy driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _conninfo(sqlalchemy_url: str) -> str:
    """Turn a SQLAlchemy URL into a libpq URL that psycopg.connect accepts."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _local_server_user() -> str | None:
    """Return a user the server on 127.0.0.1:5432 accepts, or None if none answers."""
    for user in ("postgres", "root"):
        try:
            conninfo = f"host={LOCAL_HOST} port={LOCAL_PORT} dbname=postgres user={user}"
            with psycopg.connect(conninfo, connect_timeout=2):
                return user
        except psycopg.OperationalError:
            continue
    return None


def _find_server_binaries() -> tuple[str, str]:
    """Return (initdb, pg_ctl) from the newest Debian install or from PATH (conda)."""
    installed = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    # Sort numerically so that 15 beats 9.6.
    installed.sort(key=lambda path: [int(part) for part in Path(path).parts[-3].split(".") if part.isdigit()])
    if installed:
        bindir = Path(installed[-1]).parent
        return str(bindir / "initdb"), str(bindir / "pg_ctl")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql or set " + URL_ENV)


def _run_as_prefix(workdir: Path) -> list[str]:
    """Return the command prefix that drops root to the server account, chowning workdir to it."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise RuntimeError(
            f"running as root, and initdb refuses root; no '{SERVER_ACCOUNT}' system user exists to run it as. "
            f"Run the tests as a normal user, install the PostgreSQL server packages, or set {URL_ENV}."
        ) from None
    os.chown(workdir, account.pw_uid, account.pw_gid)
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", SERVER_ACCOUNT, "--"]


def _free_port() -> int:
    """Ask the kernel for an unused loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return sock.getsockname()[1]


def _run(command: list[str], cwd: Path) -> None:
    """Run a server tool, raising with its output when it fails."""
    # cwd is the temp dir because the server account may not be able to enter the caller's cwd.
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


class PostgresServer:
    """A throwaway cluster on a fixed loopback port that a test may stop, start and restart.

    The port stays the same across restarts, so URLs and pooled engines keep
    pointing at it, as they would at a production server that restarts.
    """

    def __init__(self, workdir: Path) -> None:
        self.initdb, self.pg_ctl = _find_server_binaries()
        self.workdir = workdir
        self.data = workdir / "data"
        self.log = workdir / "server.log"
        self.port = _free_port()
        self.prefix = _run_as_prefix(workdir)
        self.running = False
        self.url = f"postgresql+psycopg://postgres@{LOCAL_HOST}:{self.port}/postgres"

    def create(self) -> None:
        """initdb the cluster in the work folder."""
        # --no-sync and fsync=off: the cluster is deleted afterwards, so durability only costs time.
        args = ["-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]
        _run([*self.prefix, self.initdb, *args], self.workdir)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        # Socket in the temp dir: the default socket dir may not exist or be writable here.
        options = f"-p {self.port} -k {shlex.quote(str(self.workdir))} -c listen_addresses={LOCAL_HOST} -c fsync=off"
        command = [*self.prefix, self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"]
        try:
            _run(command, self.workdir)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{self.log.read_text(errors='replace') if self.log.exists() else ''}") from None
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends sessions cleanly, ``immediate`` is a crash."""
        _run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"], self.workdir)
        self.running = False

    def restart(self, downtime_s: float = 0.0, mode: str = "fast") -> float:
        """Stop, stay down ``downtime_s``, start; returns the seconds from the stop to accepting again."""
        began = time.monotonic()
        self.stop(mode)
        time.sleep(downtime_s)
        self.start()
        return time.monotonic() - began


@contextmanager
def throwaway_server() -> Iterator[PostgresServer]:
    """initdb a temporary cluster, start it on a free loopback port, yield it, then delete it."""
    workdir = Path(tempfile.mkdtemp(prefix="mediafarm-pg-"))
    try:
        server = PostgresServer(workdir)
        server.create()
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop("immediate")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _throwaway_cluster() -> Iterator[str]:
    """A throwaway server's URL, for the whole session."""
    with throwaway_server() as server:
        yield server.url
