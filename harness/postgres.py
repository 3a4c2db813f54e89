"""A throw-away PostgreSQL server for tests: boots in a second or two, gone on exit.

Contract. :class:`PostgresServer` is a context manager that finds the server binaries
(Debian's /usr/lib/postgresql/VERSION/bin, the newest version; `make postgres` installs
them), runs ``initdb`` into a fresh temporary directory and starts ``postgres`` listening
on a unix socket in that directory only (no TCP). PostgreSQL refuses to run as root, so
under root both run as the ``postgres`` system user the Debian package creates (the
directory is chowned to it); under any other user, as that user. The server is a harness
child (:func:`harness.procs.spawn`): its own session, tagged with the owner, and
PDEATHSIG=SIGKILL, so it dies with the test process, SIGKILL included; a server whose
owner died anyway (the instant between fork and prctl) is reaped by the next
:class:`PostgresServer`, with the directories of dead owners (only tagged postgres
processes: other harness children are left alone). :meth:`PostgresServer.create_database`
gives a fresh database and its DSN, :meth:`PostgresServer.create_schema` (much cheaper)
a fresh schema. :meth:`PostgresServer.pause` stops the server and keeps its data
directory, :meth:`PostgresServer.resume` starts it again on the same socket (an outage
for a test of its clients). On exit the server gets SIGINT (fast shutdown), then
SIGKILL for its whole process group, and the directory is removed. Durability is traded
for speed (fsync off): the server is never killed under a test, only its clients are.
Linux only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import procs

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SYSTEM_USER = "postgres"  # created by Debian's postgresql-common
SUPERUSER = "postgres"  # the database role initdb creates (-U)
PORT = 5432  # only names the socket file (.s.PGSQL.5432): no TCP listener
DIR_PREFIX = "ab-pg-"
OWNER_FILE = "owner"  # procs.owner_token() of the test process that made the directory
# sun_path is 108 bytes (unix(7)); the socket is DIR/.s.PGSQL.5432.
MAX_SOCKET_DIR = 90
BOOT_TIMEOUT_S = 30.0  # initdb + start; about 1-2 s on an idle box
SHARED_DB = "tests"  # the database create_schema makes its schemas in
STOP_TIMEOUT_S = 10.0  # fast shutdown (SIGINT) before SIGKILL
# Settings for a test server: nothing here survives the test session, so nothing is synced.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "60",
    "logging_collector": "off",
}


class PostgresError(RuntimeError):
    """The test server could not be found, started or stopped."""


def server_bin() -> Path:
    """The bin directory of the newest installed PostgreSQL server."""
    found = [p.parent for p in Path("/").glob(BIN_GLOB.lstrip("/") + "/postgres")]
    if not found:
        raise PostgresError(f"no PostgreSQL server under {BIN_GLOB} (run `make postgres`)")

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name))

    return max(found, key=version)


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: the postgres system user under root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(f"running as root, and there is no {SYSTEM_USER!r} system user "
                            "to run PostgreSQL as (run `make postgres`)") from None
    return entry.pw_uid, entry.pw_gid


def reap_orphan_servers(base: Path) -> list[int]:
    """SIGKILL every harness-tagged postgres process whose owner is gone, and remove the
    directories under `base` whose owner is gone; only this module's servers: other harness
    children are left to the sandbox lock's reaping."""
    victims = []
    for pid in procs.all_pids():
        owner = procs.environ(pid).get(procs.OWNER_ENV)
        if owner is None or _owner_alive(owner) or not procs.alive(pid):
            continue
        with contextlib.suppress(OSError):
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if argv0.endswith(b"/bin/postgres"):
                victims.append(pid)
    procs.terminate(victims, grace_s=0.0)
    for root in base.glob(DIR_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if not _owner_alive((root / OWNER_FILE).read_text().strip()):
                shutil.rmtree(root, ignore_errors=True)
    return victims


def _owner_alive(token: str) -> bool:
    pid, _, started = token.partition(".")
    if not pid.isdigit():
        return True  # not ours to judge
    return procs.alive(int(pid)) and str(procs.start_time(int(pid))) == started


class PostgresServer:
    """``with PostgresServer() as pg: dsn = pg.create_database("t1")``."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.boot_s = 0.0  # initdb + start, measured
        self._counter = 0
        self._shared_db = False

    # -- life cycle -----------------------------------------------------------------------
    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def socket_dir(self) -> Path:
        if self.root is None:
            raise PostgresError("the server is not started")
        return self.root

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={PORT} user={SUPERUSER} dbname={dbname}"

    def start(self) -> None:
        started = time.monotonic()
        bindir = server_bin()
        run_as = _run_as()
        base = tempfile.gettempdir()
        if len(base) > MAX_SOCKET_DIR - 20:
            base = "/tmp"  # a long TMPDIR would not fit a socket path
        reap_orphan_servers(Path(base))
        self.root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base))
        (self.root / OWNER_FILE).write_text(procs.owner_token())
        if run_as is not None:
            os.chown(self.root, *run_as)
        data = self.root / "data"
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        with open(self.root / "initdb.log", "wb") as out:
            done = subprocess.run(initdb, stdout=out, stderr=subprocess.STDOUT,
                                  cwd=self.root, **_as_user(run_as), check=False,
                                  timeout=BOOT_TIMEOUT_S)
        if done.returncode != 0:
            raise PostgresError(f"initdb exited {done.returncode}:\n"
                                f"{procs.tail(self.root / 'initdb.log')}")
        self._spawn(started)
        self.boot_s = time.monotonic() - started

    def _spawn(self, started: float) -> None:
        assert self.root is not None
        data, log = self.root / "data", self.root / "server.log"
        argv = [str(server_bin() / "postgres"), "-D", str(data), "-k", str(self.root),
                "-p", str(PORT)]
        for key, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        with open(log, "ab") as out:
            self.process = procs.spawn(argv, cwd=self.root, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       **_as_user(_run_as()))
        self._wait_ready(data, log, started)

    def pause(self) -> None:
        """Stop the server (fast shutdown: its clients' connections break), keeping the
        data directory; `resume` starts it again."""
        if self.root is None:
            raise PostgresError("the server is not started")
        self._terminate()

    def resume(self) -> None:
        """Start the paused server again on the same socket and data."""
        if self.root is None or self.process is not None:
            raise PostgresError("resume: the server is not paused")
        self._spawn(time.monotonic())

    def _wait_ready(self, data: Path, log: Path, started: float) -> None:
        """Until postmaster.pid says "ready" (its 8th line, PostgreSQL >= 10)."""
        assert self.process is not None
        while time.monotonic() - started < BOOT_TIMEOUT_S:
            if self.process.poll() is not None:
                raise PostgresError(f"postgres exited {self.process.returncode} while "
                                    f"starting:\n{procs.tail(log)}")
            with contextlib.suppress(OSError):
                lines = (data / "postmaster.pid").read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.02)
        raise PostgresError(f"postgres not ready after {BOOT_TIMEOUT_S} s:\n{procs.tail(log)}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL the process group; remove the directory."""
        self._terminate()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: the backends
                process.wait()

    # -- databases --------------------------------------------------------------------------
    def create_database(self, name: str | None = None) -> str:
        """CREATE DATABASE (from template0; a fresh name unless given); its DSN. About
        0.1 s on an idle box: a test that needs only its own tables takes a schema."""
        name = self._name(name)
        self._execute("postgres", f"CREATE DATABASE {name} TEMPLATE template0")
        return self.dsn(name)

    def create_schema(self, name: str | None = None) -> str:
        """A fresh schema in the database SHARED_DB; a DSN whose search_path is that schema
        alone, so unqualified names are created and found there (about a millisecond)."""
        name = self._name(name)
        if not self._shared_db:
            self._execute("postgres", f"CREATE DATABASE {SHARED_DB} TEMPLATE template0")
            self._shared_db = True
        self._execute(SHARED_DB, f"CREATE SCHEMA {name}")
        return f"{self.dsn(SHARED_DB)} options='-c search_path={name}'"

    def _name(self, name: str | None) -> str:
        if name is None:
            self._counter += 1
            name = f"t{os.getpid()}_{self._counter}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise PostgresError(f"database or schema name {name!r}: [a-z_][a-z0-9_]* expected")
        return name

    def _execute(self, dbname: str, statement: str) -> None:
        import psycopg  # the harness needs it only here; the store's dependency anyway

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(statement)  # a str: the names are checked by _name


def _as_user(run_as: tuple[int, int] | None) -> dict[str, Any]:
    """Popen keywords that switch to `run_as`. Popen changes the credentials before it
    runs spawn's preexec hook, so PR_SET_PDEATHSIG is set after the switch and survives
    it (prctl(2): a change of the effective uid clears it; runuser or setpriv as argv[0]
    would clear it)."""
    if run_as is None:
        return {}
    return {"user": run_as[0], "group": run_as[1], "extra_groups": []}
