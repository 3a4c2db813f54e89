"""The shared personal store: PostgreSQL, for several bridges serving the same users.

Contract. :class:`PostgresStore` implements ``model.Store`` with psycopg 3 (async) and a
``psycopg_pool.AsyncConnectionPool`` of at most :data:`POOL_MAX` connections; nothing
blocks the event loop. Isolation is PostgreSQL's default, READ COMMITTED, and every write
is one transaction whose races are closed by row locks or explicit locks, not by retries:
a portion write is one conditional statement (``UPDATE ... WHERE version = expected``, or
``INSERT ... ON CONFLICT DO NOTHING`` for version 0), so of two writers carrying the same
version the second waits for the first's row lock, re-checks, matches nothing and gets
``Conflict`` with the winner's version; binding changes of one tenant are serialised by a
transaction-scoped advisory lock; reads of several rows are single statements (one
snapshot). Durability is the server's: a call that returned was committed (with the
server's ``synchronous_commit``); a client killed mid-transaction leaves nothing of it.
Schema migrations (``rows.MIGRATIONS``, the same schema as SQLite's, jsonb bodies) run in
one transaction at :meth:`PostgresStore.open` under ``pg_advisory_xact_lock``, so bridges
starting together apply them once; a schema newer than the code is refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

POOL_MAX = 8  # concurrent statements one bridge needs: API requests + the call path
CONNECT_TIMEOUT_S = 10.0  # open() waits this long for the first connection
# A statement waits this long for a pooled connection: with the server down, an API
# write is refused (503) in seconds instead of psycopg_pool's default 30 s.
CHECKOUT_TIMEOUT_S = 3.0
# pg_advisory_xact_lock keys (two int4): the class is ours ("AB" "ps": ami-bridge personal
# store), the second picks what is serialised.
LOCK_CLASS = 0x4142_7073
LOCK_MIGRATIONS = 1
# Binding changes lock (LOCK_CLASS, hashtext(tenant)): one tenant's at a time.

_USERS_JOIN = (f"SELECT {rows.USER_JOIN_COLUMNS} FROM users u LEFT JOIN bindings b "
               "ON b.tenant = u.tenant AND b.user_id = u.user_id")
_USERS_ORDER = " ORDER BY u.tenant, u.user_id, b.seq"


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


class PostgresStore:
    """``model.Store`` on a PostgreSQL database (see the module docstring for the contract)."""

    def __init__(self, dsn: str, *, clock: Callable[[], float] = time.time) -> None:
        self._dsn = dsn
        self._clock = clock  # a portion's updated_at: this bridge's clock, as with SQLite
        self.where = f"postgresql store ({safe_dsn(dsn)})"
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] | None = None

    # -- plumbing --------------------------------------------------------------------------
    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncCursor[tuple[Any, ...]]]:
        """One transaction on a pooled connection; driver errors become StoreError."""
        if self._pool is None:
            raise StoreError(f"{self.where}: not open")
        try:
            async with self._pool.connection() as conn, conn.transaction(), \
                    conn.cursor() as cur:
                yield cur
        except psycopg.errors.UniqueViolation as exc:
            raise Exists(f"{self.where}: {exc.diag.message_detail or exc}") from exc
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFound(f"{self.where}: no such user ({exc.diag.message_detail})") from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"{self.where}: {exc}") from exc

    async def open(self) -> None:
        if self._pool is not None:
            raise StoreError(f"{self.where}: already open")
        pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = \
            AsyncConnectionPool(self._dsn, min_size=1, max_size=POOL_MAX, open=False,
                                timeout=CHECKOUT_TIMEOUT_S,
                                kwargs={"autocommit": True}, name="ami-bridge-personal",
                                check=AsyncConnectionPool.check_connection)
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreError(f"{self.where}: no connection within {CONNECT_TIMEOUT_S} s "
                             f"({exc})") from exc
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self._tx() as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                              (LOCK_CLASS, LOCK_MIGRATIONS))
            await cur.execute(rows.SCHEMA_VERSION_TABLE)
            await cur.execute("SELECT version FROM schema_version")
            row = await cur.fetchone()
            if row is None:
                await cur.execute("INSERT INTO schema_version (version) VALUES (0)")
            scripts = rows.migrations(rows.POSTGRES)
            todo = rows.pending(0 if row is None else int(row[0]), self.where)
            for index in todo:
                for statement in scripts[index]:
                    await cur.execute(statement)
            if todo:
                await cur.execute("UPDATE schema_version SET version = %s", (len(scripts),))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- users and bindings --------------------------------------------------------------------
    async def create_user(self, user: User, password_hash: str | None = None) -> None:
        rows.check_user(user)
        bindings = rows.check_bindings(user.bindings)
        async with self._tx() as cur:
            if bindings:
                await _lock_bindings(cur, user.tenant)
            await _require_absent(cur, user)
            await _number_free(cur, user)
            await cur.execute("SELECT extension, user_id FROM bindings WHERE tenant = %s "
                              "AND extension = ANY(%s)", (user.tenant, list(bindings)))
            for ext, holder in await cur.fetchall():
                raise Exists(f"extension {ext!r} of tenant {user.tenant!r} is bound to user "
                             f"{holder!r}: create the user unbound, then set_bindings")
            await cur.execute(
                "INSERT INTO users (tenant, user_id, number, display_name, timezone, admin, "
                "password_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (user.tenant, user.user_id, user.number, user.display_name, user.timezone,
                 user.admin, password_hash))
            await _insert_bindings(cur, user.tenant, user.user_id, bindings)

    async def get_user(self, tenant: str, user_id: str) -> User | None:
        async with self._tx() as cur:
            found = await _users(cur, "WHERE u.tenant = %s AND u.user_id = %s",
                                 (tenant, user_id))
        return found[0] if found else None

    async def list_users(self, tenant: str | None = None) -> list[User]:
        async with self._tx() as cur:
            if tenant is None:
                return await _users(cur, "", ())
            return await _users(cur, "WHERE u.tenant = %s", (tenant,))

    async def update_user(self, user: User) -> None:
        rows.check_user(user)
        async with self._tx() as cur:
            await _require_user(cur, user.tenant, user.user_id)
            await _number_free(cur, user)
            await cur.execute("UPDATE users SET number = %s, display_name = %s, "
                              "timezone = %s, admin = %s WHERE tenant = %s AND user_id = %s",
                              (user.number, user.display_name, user.timezone, user.admin,
                               user.tenant, user.user_id))
            if cur.rowcount == 0:  # deleted since the check (a concurrent delete_user)
                raise NotFound(f"no user {user.user_id!r} in tenant {user.tenant!r}")

    async def delete_user(self, tenant: str, user_id: str) -> None:
        async with self._tx() as cur:
            await cur.execute("DELETE FROM users WHERE tenant = %s AND user_id = %s",
                              (tenant, user_id))
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")

    async def set_bindings(self, tenant: str, user_id: str,
                           extensions: Sequence[str]) -> list[User]:
        wanted = rows.check_bindings(extensions)
        async with self._tx() as cur:
            await _lock_bindings(cur, tenant)
            await _require_user(cur, tenant, user_id)
            await cur.execute(
                "SELECT user_id, extension FROM bindings WHERE tenant = %s AND user_id IN "
                "(SELECT %s UNION SELECT user_id FROM bindings WHERE tenant = %s "
                "AND extension = ANY(%s)) ORDER BY user_id, seq",
                (tenant, user_id, tenant, list(wanted)))
            before: dict[str, tuple[str, ...]] = {user_id: ()}
            for uid, ext in await cur.fetchall():
                before[uid] = (*before.get(uid, ()), ext)
            changed = rows.rebind(user_id, wanted, before)
            if not changed:
                return []
            await cur.execute("DELETE FROM bindings WHERE tenant = %s "
                              "AND (user_id = %s OR extension = ANY(%s))",
                              (tenant, user_id, list(wanted)))
            await _insert_bindings(cur, tenant, user_id, wanted)
            return await _users(cur, "WHERE u.tenant = %s AND u.user_id = ANY(%s)",
                                (tenant, sorted(changed)))

    async def password_hash(self, tenant: str, user_id: str) -> str | None:
        async with self._tx() as cur:
            await cur.execute("SELECT password_hash FROM users WHERE tenant = %s "
                              "AND user_id = %s", (tenant, user_id))
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def set_password_hash(self, tenant: str, user_id: str, password_hash: str) -> None:
        async with self._tx() as cur:
            await cur.execute("UPDATE users SET password_hash = %s WHERE tenant = %s "
                              "AND user_id = %s", (password_hash, tenant, user_id))
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")
            # A new password ends every session of the old one (a stolen token dies too).
            await cur.execute("DELETE FROM sessions WHERE tenant = %s AND user_id = %s",
                              (tenant, user_id))

    # -- portions ------------------------------------------------------------------------------
    async def get_portion(self, tenant: str, user_id: str) -> Portion:
        async with self._tx() as cur:
            # One statement: the user's existence and the portion in one snapshot.
            await cur.execute("SELECT p.version, p.body, p.updated_at FROM users u "
                              "LEFT JOIN portions p ON p.tenant = u.tenant "
                              "AND p.user_id = u.user_id "
                              "WHERE u.tenant = %s AND u.user_id = %s", (tenant, user_id))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")
        return rows.portion_from_row(tenant, user_id, None if row[0] is None else row)

    async def put_portion(self, tenant: str, user_id: str, body: Mapping[str, Any],
                          expected_version: int) -> Portion:
        text = rows.encode_json(body, f"portion of {tenant}/{user_id}")
        now = self._clock()
        async with self._tx() as cur:
            await _require_user(cur, tenant, user_id)
            if expected_version == 0:
                await cur.execute(
                    "INSERT INTO portions (tenant, user_id, version, body, updated_at) "
                    "VALUES (%s, %s, 1, %s::jsonb, %s) "
                    "ON CONFLICT DO NOTHING RETURNING version, body, updated_at",
                    (tenant, user_id, text, now))
            else:
                await cur.execute(
                    "UPDATE portions SET version = version + 1, body = %s::jsonb, "
                    "updated_at = %s WHERE tenant = %s AND user_id = %s AND version = %s "
                    "RETURNING version, body, updated_at",
                    (text, now, tenant, user_id, expected_version))
            row = await cur.fetchone()
            if row is None:
                await cur.execute("SELECT version FROM portions WHERE tenant = %s "
                                  "AND user_id = %s", (tenant, user_id))
                current = await cur.fetchone()
                raise Conflict(0 if current is None else int(current[0]))
        return rows.portion_from_row(tenant, user_id, row)

    async def all_portions(self, tenant: str | None = None) -> list[Portion]:
        sql = "SELECT tenant, user_id, version, body, updated_at FROM portions"
        async with self._tx() as cur:
            if tenant is None:
                await cur.execute(sql)
            else:
                await cur.execute(sql + " WHERE tenant = %s", (tenant,))
            found = await cur.fetchall()
        return sorted((rows.portion_from_row(r[0], r[1], r[2:]) for r in found),
                      key=lambda p: (p.tenant, p.user_id))

    # -- sessions ------------------------------------------------------------------------------
    async def add_session(self, session: Session) -> None:
        async with self._tx() as cur:
            await _require_user(cur, session.tenant, session.user_id)
            await cur.execute("INSERT INTO sessions (token_hash, tenant, user_id, expires_at) "
                              "VALUES (%s, %s, %s, %s)",
                              (session.token_hash, session.tenant, session.user_id,
                               session.expires_at))

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        async with self._tx() as cur:
            await cur.execute("SELECT token_hash, tenant, user_id, expires_at FROM sessions "
                              "WHERE token_hash = %s AND expires_at > %s", (token_hash, now))
            row = await cur.fetchone()
        return None if row is None else Session(row[0], row[1], row[2], float(row[3]))

    async def delete_session(self, token_hash: str) -> None:
        async with self._tx() as cur:
            await cur.execute("DELETE FROM sessions WHERE token_hash = %s", (token_hash,))

    async def purge_sessions(self, now: float) -> int:
        async with self._tx() as cur:
            await cur.execute("DELETE FROM sessions WHERE expires_at <= %s", (now,))
            return cur.rowcount

    # -- traces --------------------------------------------------------------------------------
    async def add_traces(self, records: Sequence[TraceRecord]) -> None:
        values = [rows.trace_row(record) for record in records]
        if not values:
            return
        marks = ", ".join(["%s"] * (len(values[0]) - 2) + ["%s::jsonb"] * 2)
        async with self._tx() as cur:
            await cur.executemany(f"INSERT INTO traces ({rows.TRACE_COLUMNS}) "
                                  f"VALUES ({marks})", values)

    async def traces(self, tenant: str, *, uniqueid: str | None = None,
                     user_id: str | None = None, limit: int = 100) -> list[TraceRecord]:
        if limit < 0:
            raise StoreError(f"traces: limit {limit} is negative")
        async with self._tx() as cur:
            await cur.execute(
                f"SELECT {rows.TRACE_COLUMNS} FROM traces WHERE tenant = %s "
                "AND (%s::text IS NULL OR uniqueid = %s) AND (%s::text IS NULL OR user_id = %s) "
                "ORDER BY at DESC, id DESC LIMIT %s",
                (tenant, uniqueid, uniqueid, user_id, user_id, limit))
            return [rows.trace_from_row(row) for row in await cur.fetchall()]

    async def prune_traces(self, *, before: float, max_rows_per_tenant: int) -> int:
        if max_rows_per_tenant < 0:
            raise StoreError(f"prune_traces: max_rows_per_tenant {max_rows_per_tenant} "
                             "is negative")
        async with self._tx() as cur:
            await cur.execute("DELETE FROM traces WHERE at < %s", (before,))
            old = cur.rowcount
            await cur.execute(
                "DELETE FROM traces WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
                "(PARTITION BY tenant ORDER BY at DESC, id DESC) AS n FROM traces) AS ranked "
                "WHERE n > %s)", (max_rows_per_tenant,))
            return old + cur.rowcount

    # -- VTS state -----------------------------------------------------------------------------
    async def put_vts_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        values = rows.vts_state_rows(states, self._clock())
        if not values:
            return
        async with self._tx() as cur:
            await cur.executemany(
                "INSERT INTO vts_state (tenant, body, updated_at) VALUES (%s, %s::jsonb, %s) "
                "ON CONFLICT (tenant) DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at", values)

    async def vts_states(self) -> list[VtsState]:
        async with self._tx() as cur:
            await cur.execute("SELECT tenant, body, updated_at FROM vts_state")
            found = await cur.fetchall()
        # sorted here: a database's collation need not be bytewise
        return sorted((rows.vts_state_from_row(row) for row in found), key=lambda s: s.tenant)


# -- statements shared by several methods ---------------------------------------------------

Cursor = psycopg.AsyncCursor[tuple[Any, ...]]


async def _users(cur: Cursor, where: str, params: tuple[Any, ...]) -> list[User]:
    await cur.execute(f"{_USERS_JOIN} {where}{_USERS_ORDER}", params)
    return rows.users_from_join(await cur.fetchall())


async def _lock_bindings(cur: Cursor, tenant: str) -> None:
    await cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, tenant))


async def _require_user(cur: Cursor, tenant: str, user_id: str) -> None:
    await cur.execute("SELECT 1 FROM users WHERE tenant = %s AND user_id = %s",
                      (tenant, user_id))
    if await cur.fetchone() is None:
        raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")


async def _require_absent(cur: Cursor, user: User) -> None:
    await cur.execute("SELECT 1 FROM users WHERE tenant = %s AND user_id = %s",
                      (user.tenant, user.user_id))
    if await cur.fetchone() is not None:
        raise Exists(f"user {user.user_id!r} already exists in tenant {user.tenant!r}")


async def _number_free(cur: Cursor, user: User) -> None:
    await cur.execute("SELECT user_id FROM users WHERE tenant = %s AND number = %s "
                      "AND user_id <> %s", (user.tenant, user.number, user.user_id))
    row = await cur.fetchone()
    if row is not None:
        raise Exists(f"number {user.number!r} already belongs to user {row[0]!r} "
                     f"in tenant {user.tenant!r}")


async def _insert_bindings(cur: Cursor, tenant: str, user_id: str,
                           extensions: tuple[str, ...]) -> None:
    if extensions:
        await cur.executemany("INSERT INTO bindings (tenant, extension, user_id, seq) "
                              "VALUES (%s, %s, %s, %s)",
                              [(tenant, ext, user_id, seq) for seq, ext in enumerate(extensions)])
