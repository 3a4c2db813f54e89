"""The embedded personal store: one SQLite file under the daemon's state directory.

Contract. :class:`SqliteStore` implements ``model.Store`` with the stdlib ``sqlite3``. One
connection, opened, used and closed only by one dedicated worker thread (a single-thread
executor): the event loop never blocks on disk, and calls run one at a time in the order
they were made. Every write is one transaction begun with ``BEGIN IMMEDIATE`` (the write
lock is taken first, so a read-then-write inside it is serialisable, also against other
processes on the same file, which wait up to :data:`BUSY_TIMEOUT_S`); reads that take
several statements run in one (deferred) transaction, so they see one snapshot.
Durability: WAL with ``synchronous=FULL``. Promised and tested: a write whose call returned
survives a crash of the process (SIGKILL), and a write that was interrupted is absent as
a whole (old or new, never half). Power loss is out of scope of the tests: the WAL is
fsynced at every commit, which SQLite documents as durable only if the disk and the file
system honour fsync. A call cancelled while its transaction runs in the worker still
commits or rolls back as a whole. Foreign keys are on (a user's bindings, portion and
sessions go with the user). The file is created 0600 and a missing parent directory
0700. Schema migrations (``rows.MIGRATIONS``) are applied in one transaction at
:meth:`SqliteStore.open`; a schema newer than the code is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ami_bridge.personal import rows
from ami_bridge.personal.model import (
    Conflict,
    Exists,
    NotFound,
    Portion,
    Session,
    StoreError,
    TraceRecord,
    User,
    VtsState,
)

T = TypeVar("T")
# How long a write waits for another process's write lock on the same file (sqlite3's
# busy handler) before the call fails with StoreError.
BUSY_TIMEOUT_S = 10.0
WAL_SWITCH_RETRY_S = 0.01  # between attempts to switch a new file to WAL (see below)
FILE_MODE = 0o600  # users' password hashes and session hashes live here
DIR_MODE = 0o700

_USERS_JOIN = (f"SELECT {rows.USER_JOIN_COLUMNS} FROM users u LEFT JOIN bindings b "
               "ON b.tenant = u.tenant AND b.user_id = u.user_id")
_USERS_ORDER = " ORDER BY u.tenant, u.user_id, b.seq"


class SqliteStore:
    """``model.Store`` on one SQLite file (see the module docstring for the contract)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- plumbing --------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"sqlite store {self.path}: not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"sqlite store {self.path}: not open")
        return self._conn

    def _tx(self, begin: str, fn: Callable[..., T], *args: Any) -> T:
        """In the worker: `fn(conn, *args)` inside one transaction."""
        conn = self._db()
        try:
            conn.execute(begin)
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc
        return result

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._tx, "BEGIN IMMEDIATE", fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._tx, "BEGIN", fn, *args)

    # -- open / close ------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            raise StoreError(f"sqlite store {self.path}: already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="personal-sqlite")
        try:
            await self._run(self._connect)
            await self._write(_migrate, str(self.path))
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, mode=DIR_MODE)
        except FileExistsError:
            pass  # the operator's (or another store's, racing us): left as it is
        else:
            parent.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: cannot open: {exc}") from exc
        try:
            mode = _journal_mode_wal(conn)
            if mode != "wal":
                raise StoreError(f"sqlite store {self.path}: journal mode {mode!r}, not WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"sqlite store {self.path}: cannot open: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)  # its last job is done: nothing to wait for

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- users and bindings --------------------------------------------------------------------
    async def create_user(self, user: User, password_hash: str | None = None) -> None:
        rows.check_user(user)
        bindings = rows.check_bindings(user.bindings)
        await self._write(_create_user, user, bindings, password_hash)

    async def get_user(self, tenant: str, user_id: str) -> User | None:
        found = await self._read(_users, "WHERE u.tenant = ? AND u.user_id = ?",
                                 (tenant, user_id))
        return found[0] if found else None

    async def list_users(self, tenant: str | None = None) -> list[User]:
        if tenant is None:
            return await self._read(_users, "", ())
        return await self._read(_users, "WHERE u.tenant = ?", (tenant,))

    async def update_user(self, user: User) -> None:
        rows.check_user(user)
        await self._write(_update_user, user)

    async def delete_user(self, tenant: str, user_id: str) -> None:
        await self._write(_delete_user, tenant, user_id)

    async def set_bindings(self, tenant: str, user_id: str,
                           extensions: Sequence[str]) -> list[User]:
        wanted = rows.check_bindings(extensions)
        return await self._write(_set_bindings, tenant, user_id, wanted)

    async def password_hash(self, tenant: str, user_id: str) -> str | None:
        return await self._read(_password_hash, tenant, user_id)

    async def set_password_hash(self, tenant: str, user_id: str, password_hash: str) -> None:
        await self._write(_set_password_hash, tenant, user_id, password_hash)

    # -- portions ------------------------------------------------------------------------------
    async def get_portion(self, tenant: str, user_id: str) -> Portion:
        return await self._read(_get_portion, tenant, user_id)

    async def put_portion(self, tenant: str, user_id: str, body: Mapping[str, Any],
                          expected_version: int) -> Portion:
        text = rows.encode_json(body, f"portion of {tenant}/{user_id}")
        return await self._write(_put_portion, tenant, user_id, text, expected_version,
                                 self._clock())

    async def all_portions(self, tenant: str | None = None) -> list[Portion]:
        return await self._read(_all_portions, tenant)

    # -- sessions ------------------------------------------------------------------------------
    async def add_session(self, session: Session) -> None:
        await self._write(_add_session, session)

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        return await self._read(_get_session, token_hash, now)

    async def delete_session(self, token_hash: str) -> None:
        await self._write(_exec, "DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def purge_sessions(self, now: float) -> int:
        return await self._write(_exec, "DELETE FROM sessions WHERE expires_at <= ?", (now,))

    # -- traces --------------------------------------------------------------------------------
    async def add_traces(self, records: Sequence[TraceRecord]) -> None:
        values = [rows.trace_row(record) for record in records]
        if values:
            await self._write(_add_traces, values)

    async def traces(self, tenant: str, *, uniqueid: str | None = None,
                     user_id: str | None = None, limit: int = 100) -> list[TraceRecord]:
        if limit < 0:
            raise StoreError(f"traces: limit {limit} is negative")
        return await self._read(_traces, tenant, uniqueid, user_id, limit)

    async def prune_traces(self, *, before: float, max_rows_per_tenant: int) -> int:
        if max_rows_per_tenant < 0:
            raise StoreError(f"prune_traces: max_rows_per_tenant {max_rows_per_tenant} "
                             "is negative")
        return await self._write(_prune_traces, before, max_rows_per_tenant)

    # -- VTS state -----------------------------------------------------------------------------
    async def put_vts_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        values = rows.vts_state_rows(states, self._clock())
        if values:
            await self._write(_put_vts_states, values)

    async def vts_states(self) -> list[VtsState]:
        return await self._read(_vts_states)


def _journal_mode_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL (a no-op once the file is WAL). The switch needs the file to itself,
    and SQLite answers SQLITE_BUSY at once, without its busy handler, while another
    connection is opening the same new file: so wait here, as the busy handler would."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(WAL_SWITCH_RETRY_S)


# -- transactions (run in the worker thread, inside SqliteStore._tx) ---------------------------


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    conn.execute(rows.SCHEMA_VERSION_TABLE)
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    found = 0 if row is None else int(row[0])
    scripts = rows.migrations(rows.SQLITE)
    todo = rows.pending(found, f"sqlite store {where}")
    for index in todo:
        for statement in scripts[index]:
            conn.execute(statement)
    if todo:
        conn.execute("UPDATE schema_version SET version = ?", (len(scripts),))


def _exec(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return conn.execute(sql, params).rowcount


def _require_user(conn: sqlite3.Connection, tenant: str, user_id: str) -> None:
    if conn.execute("SELECT 1 FROM users WHERE tenant = ? AND user_id = ?",
                    (tenant, user_id)).fetchone() is None:
        raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")


def _number_taken(conn: sqlite3.Connection, user: User) -> None:
    row = conn.execute("SELECT user_id FROM users WHERE tenant = ? AND number = ? "
                       "AND user_id != ?", (user.tenant, user.number, user.user_id)).fetchone()
    if row is not None:
        raise Exists(f"number {user.number!r} already belongs to user {row[0]!r} "
                     f"in tenant {user.tenant!r}")


def _users(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[User]:
    return rows.users_from_join(conn.execute(f"{_USERS_JOIN} {where}{_USERS_ORDER}", params))


def _create_user(conn: sqlite3.Connection, user: User, bindings: tuple[str, ...],
                 password_hash: str | None) -> None:
    if conn.execute("SELECT 1 FROM users WHERE tenant = ? AND user_id = ?",
                    (user.tenant, user.user_id)).fetchone() is not None:
        raise Exists(f"user {user.user_id!r} already exists in tenant {user.tenant!r}")
    _number_taken(conn, user)
    for ext in bindings:
        row = conn.execute("SELECT user_id FROM bindings WHERE tenant = ? AND extension = ?",
                           (user.tenant, ext)).fetchone()
        if row is not None:
            raise Exists(f"extension {ext!r} of tenant {user.tenant!r} is bound to user "
                         f"{row[0]!r}: create the user unbound, then set_bindings")
    conn.execute("INSERT INTO users (tenant, user_id, number, display_name, timezone, admin, "
                 "password_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (user.tenant, user.user_id, user.number, user.display_name, user.timezone,
                  int(user.admin), password_hash))
    conn.executemany("INSERT INTO bindings (tenant, extension, user_id, seq) "
                     "VALUES (?, ?, ?, ?)",
                     [(user.tenant, ext, user.user_id, seq) for seq, ext in enumerate(bindings)])


def _update_user(conn: sqlite3.Connection, user: User) -> None:
    _require_user(conn, user.tenant, user.user_id)
    _number_taken(conn, user)
    conn.execute("UPDATE users SET number = ?, display_name = ?, timezone = ?, admin = ? "
                 "WHERE tenant = ? AND user_id = ?",
                 (user.number, user.display_name, user.timezone, int(user.admin),
                  user.tenant, user.user_id))


def _delete_user(conn: sqlite3.Connection, tenant: str, user_id: str) -> None:
    if conn.execute("DELETE FROM users WHERE tenant = ? AND user_id = ?",
                    (tenant, user_id)).rowcount == 0:
        raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")


def _set_bindings(conn: sqlite3.Connection, tenant: str, user_id: str,
                  wanted: tuple[str, ...]) -> list[User]:
    _require_user(conn, tenant, user_id)
    marks = ", ".join("?" * len(wanted))
    holders = [row[0] for row in conn.execute(
        f"SELECT DISTINCT user_id FROM bindings WHERE tenant = ? AND extension IN ({marks})",
        (tenant, *wanted))] if wanted else []
    affected = {user_id, *holders}
    before: dict[str, tuple[str, ...]] = {uid: () for uid in affected}
    for uid in affected:
        before[uid] = tuple(row[0] for row in conn.execute(
            "SELECT extension FROM bindings WHERE tenant = ? AND user_id = ? ORDER BY seq",
            (tenant, uid)))
    changed = rows.rebind(user_id, wanted, before)
    if not changed:
        return []
    conn.execute("DELETE FROM bindings WHERE tenant = ? AND user_id = ?", (tenant, user_id))
    conn.executemany("DELETE FROM bindings WHERE tenant = ? AND extension = ?",
                     [(tenant, ext) for ext in wanted])
    conn.executemany("INSERT INTO bindings (tenant, extension, user_id, seq) "
                     "VALUES (?, ?, ?, ?)",
                     [(tenant, ext, user_id, seq) for seq, ext in enumerate(wanted)])
    marks = ", ".join("?" * len(changed))
    return _users(conn, f"WHERE u.tenant = ? AND u.user_id IN ({marks})",
                  (tenant, *sorted(changed)))


def _password_hash(conn: sqlite3.Connection, tenant: str, user_id: str) -> str | None:
    row = conn.execute("SELECT password_hash FROM users WHERE tenant = ? AND user_id = ?",
                       (tenant, user_id)).fetchone()
    return None if row is None else row[0]


def _set_password_hash(conn: sqlite3.Connection, tenant: str, user_id: str,
                       password_hash: str) -> None:
    if conn.execute("UPDATE users SET password_hash = ? WHERE tenant = ? AND user_id = ?",
                    (password_hash, tenant, user_id)).rowcount == 0:
        raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")
    # A new password ends every session of the old one (a stolen token dies with it).
    conn.execute("DELETE FROM sessions WHERE tenant = ? AND user_id = ?", (tenant, user_id))


def _get_portion(conn: sqlite3.Connection, tenant: str, user_id: str) -> Portion:
    _require_user(conn, tenant, user_id)
    row = conn.execute("SELECT version, body, updated_at FROM portions "
                       "WHERE tenant = ? AND user_id = ?", (tenant, user_id)).fetchone()
    return rows.portion_from_row(tenant, user_id, row)


def _put_portion(conn: sqlite3.Connection, tenant: str, user_id: str, body: str,
                 expected: int, now: float) -> Portion:
    _require_user(conn, tenant, user_id)
    if expected == 0:
        written = conn.execute(
            "INSERT INTO portions (tenant, user_id, version, body, updated_at) "
            "VALUES (?, ?, 1, ?, ?) ON CONFLICT DO NOTHING",
            (tenant, user_id, body, now)).rowcount
    else:
        written = conn.execute(
            "UPDATE portions SET version = version + 1, body = ?, updated_at = ? "
            "WHERE tenant = ? AND user_id = ? AND version = ?",
            (body, now, tenant, user_id, expected)).rowcount
    if written == 0:
        row = conn.execute("SELECT version FROM portions WHERE tenant = ? AND user_id = ?",
                           (tenant, user_id)).fetchone()
        raise Conflict(0 if row is None else int(row[0]))
    return rows.portion_from_row(tenant, user_id, (expected + 1, body, now))


def _all_portions(conn: sqlite3.Connection, tenant: str | None) -> list[Portion]:
    sql = "SELECT tenant, user_id, version, body, updated_at FROM portions"
    found = conn.execute(sql + " WHERE tenant = ?", (tenant,)) if tenant is not None \
        else conn.execute(sql)
    return sorted((rows.portion_from_row(r[0], r[1], r[2:]) for r in found),
                  key=lambda p: (p.tenant, p.user_id))


def _add_session(conn: sqlite3.Connection, session: Session) -> None:
    _require_user(conn, session.tenant, session.user_id)
    if conn.execute("SELECT 1 FROM sessions WHERE token_hash = ?",
                    (session.token_hash,)).fetchone() is not None:
        raise Exists("a session with that token hash already exists")
    conn.execute("INSERT INTO sessions (token_hash, tenant, user_id, expires_at) "
                 "VALUES (?, ?, ?, ?)",
                 (session.token_hash, session.tenant, session.user_id, session.expires_at))


def _get_session(conn: sqlite3.Connection, token_hash: str, now: float) -> Session | None:
    row = conn.execute("SELECT token_hash, tenant, user_id, expires_at FROM sessions "
                       "WHERE token_hash = ? AND expires_at > ?", (token_hash, now)).fetchone()
    return None if row is None else Session(row[0], row[1], row[2], float(row[3]))


def _add_traces(conn: sqlite3.Connection, values: list[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" * len(values[0]))
    conn.executemany(f"INSERT INTO traces ({rows.TRACE_COLUMNS}) VALUES ({marks})", values)


def _traces(conn: sqlite3.Connection, tenant: str, uniqueid: str | None,
            user_id: str | None, limit: int) -> list[TraceRecord]:
    where, params = ["tenant = ?"], [tenant]
    if uniqueid is not None:
        where.append("uniqueid = ?")
        params.append(uniqueid)
    if user_id is not None:
        where.append("user_id = ?")
        params.append(user_id)
    found = conn.execute(f"SELECT {rows.TRACE_COLUMNS} FROM traces "
                         f"WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT ?",
                         (*params, limit))
    return [rows.trace_from_row(row) for row in found]


def _prune_traces(conn: sqlite3.Connection, before: float, max_rows: int) -> int:
    old = conn.execute("DELETE FROM traces WHERE at < ?", (before,)).rowcount
    over = conn.execute(
        "DELETE FROM traces WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
        "(PARTITION BY tenant ORDER BY at DESC, id DESC) AS n FROM traces) AS ranked "
        "WHERE n > ?)", (max_rows,)).rowcount
    return old + over


def _put_vts_states(conn: sqlite3.Connection, values: list[tuple[str, str, float]]) -> None:
    conn.executemany("INSERT INTO vts_state (tenant, body, updated_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (tenant) DO UPDATE SET body = excluded.body, "
                     "updated_at = excluded.updated_at", values)


def _vts_states(conn: sqlite3.Connection) -> list[VtsState]:
    found = conn.execute("SELECT tenant, body, updated_at FROM vts_state ORDER BY tenant")
    return [rows.vts_state_from_row(row) for row in found]
