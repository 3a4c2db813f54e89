"""What the two store backends share: the schema, its migrations, and rows <-> shapes.

Contract. One schema, written once: :data:`MIGRATIONS` is the ordered tuple of migration
scripts (each a tuple of statements) with the few column types that differ between the
backends left as placeholders that :func:`migrations` fills for a :class:`Dialect`
(:data:`SQLITE`, :data:`POSTGRES`). Version N of the schema is the first N scripts; a
backend records N in its ``schema_version`` table and applies the rest in one transaction
at open. Never edit a released script: append a new one. Bodies and trace mappings are
JSON (TEXT in SQLite, jsonb in PostgreSQL), encoded by :func:`encode_json`, which refuses
what is not JSON rather than repairing it. :func:`rebind` is the hot-desk rule both
backends apply inside their write transaction. Pure: no I/O here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ami_bridge.personal.model import (
    MAX_BINDINGS,
    MAX_DISPLAY_NAME,
    USER_ID_RE,
    Portion,
    StoreError,
    TraceRecord,
    User,
    VtsState,
)


@dataclass(frozen=True)
class Dialect:
    """The column types that differ between the backends."""

    name: str
    boolean: str
    real: str
    json: str
    serial_key: str  # an auto-numbered primary key column (traces: ties in time)


SQLITE = Dialect(name="sqlite", boolean="INTEGER", real="REAL", json="TEXT",
                 serial_key="INTEGER PRIMARY KEY")
POSTGRES = Dialect(name="postgresql", boolean="BOOLEAN", real="DOUBLE PRECISION",
                   json="JSONB", serial_key="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")

SCHEMA_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

# Migration 1: users (id and number unique per tenant), bindings (one user per extension
# per tenant), portions, sessions (by token hash), traces. Everything a user owns goes
# with the user (ON DELETE CASCADE); traces stay, they are history and are pruned by age.
_V1 = (
    """CREATE TABLE users (
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        number TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        timezone TEXT NOT NULL DEFAULT '',
        admin {boolean} NOT NULL DEFAULT FALSE,
        password_hash TEXT,
        PRIMARY KEY (tenant, user_id),
        UNIQUE (tenant, number))""",
    """CREATE TABLE bindings (
        tenant TEXT NOT NULL,
        extension TEXT NOT NULL,
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (tenant, extension),
        FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, user_id)
            ON DELETE CASCADE ON UPDATE CASCADE)""",
    "CREATE INDEX bindings_by_user ON bindings (tenant, user_id, seq)",
    """CREATE TABLE portions (
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0),
        body {json} NOT NULL,
        updated_at {real} NOT NULL,
        PRIMARY KEY (tenant, user_id),
        FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, user_id)
            ON DELETE CASCADE ON UPDATE CASCADE)""",
    """CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        expires_at {real} NOT NULL,
        FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, user_id)
            ON DELETE CASCADE ON UPDATE CASCADE)""",
    "CREATE INDEX sessions_by_user ON sessions (tenant, user_id)",
    "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
    """CREATE TABLE traces (
        id {serial_key},
        tenant TEXT NOT NULL,
        uniqueid TEXT NOT NULL,
        at {real} NOT NULL,
        venue TEXT NOT NULL,
        user_id TEXT NOT NULL,
        request INTEGER NOT NULL,
        previous TEXT NOT NULL,
        outcome TEXT NOT NULL,
        rule TEXT NOT NULL,
        why TEXT NOT NULL,
        inputs {json} NOT NULL,
        call_data {json} NOT NULL)""",
    "CREATE INDEX traces_by_time ON traces (tenant, at, id)",
    "CREATE INDEX traces_by_call ON traces (tenant, uniqueid, at)",
    "CREATE INDEX traces_by_user ON traces (tenant, user_id, at)",
)

# Migration 2: a VTS's saved state per tenant (protocol 2.2, ami_bridge.vts_state). One
# row per tenant, replaced whole; no foreign key: tenants live in the config, not here.
_V2 = (
    """CREATE TABLE vts_state (
        tenant TEXT PRIMARY KEY,
        body {json} NOT NULL,
        updated_at {real} NOT NULL)""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)


def migrations(dialect: Dialect) -> tuple[tuple[str, ...], ...]:
    """MIGRATIONS with `dialect`'s column types filled in."""
    types = {"boolean": dialect.boolean, "real": dialect.real, "json": dialect.json,
             "serial_key": dialect.serial_key}
    return tuple(tuple(stmt.format(**types) for stmt in script) for script in MIGRATIONS)


def pending(found: int, where: str) -> range:
    """Indexes of the scripts to apply on a schema at version `found`; a schema newer
    than this code knows is refused (an older bridge must not write to it)."""
    if found > len(MIGRATIONS):
        raise StoreError(f"{where}: schema version {found} is newer than this code knows "
                         f"(version {len(MIGRATIONS)}); upgrade ami-bridge")
    if found < 0:
        raise StoreError(f"{where}: schema version {found} is invalid")
    return range(found, len(MIGRATIONS))


# -- JSON ------------------------------------------------------------------------------------


def encode_json(value: Mapping[str, Any], what: str) -> str:
    """Compact, key-sorted JSON; StoreError naming `what` for anything JSON cannot hold
    (NaN and infinities included: PostgreSQL's jsonb refuses them)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: not storable as JSON: {exc}") from None


def decode_json(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object from a TEXT column (SQLite) or an already decoded jsonb (psycopg)."""
    decoded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(decoded, Mapping):
        raise StoreError(f"stored JSON is not an object: {decoded!r:.80}")
    return dict(decoded)


# -- users and bindings --------------------------------------------------------------------

# The columns of a user row as the backends select them, then the binding (NULL if none):
# users LEFT JOIN bindings, ordered by tenant, user_id, seq.
USER_JOIN_COLUMNS = ("u.tenant, u.user_id, u.number, u.display_name, u.timezone, u.admin, "
                     "b.extension")


def check_user(user: User) -> None:
    """The limits of model.py that a store must not let through."""
    if not USER_ID_RE.fullmatch(user.user_id):
        raise StoreError(f"user id {user.user_id!r}: {USER_ID_RE.pattern} expected")
    if not user.tenant or not user.number:
        raise StoreError(f"user {user.user_id!r}: tenant and number must not be empty")
    if len(user.display_name) > MAX_DISPLAY_NAME:
        raise StoreError(f"user {user.user_id!r}: display name longer than "
                         f"{MAX_DISPLAY_NAME} characters")


def check_bindings(extensions: Sequence[str]) -> tuple[str, ...]:
    """The extensions as a tuple; refused when empty-named, repeated or too many."""
    if isinstance(extensions, str):
        raise StoreError("bindings: a sequence of extensions expected, not a string")
    wanted = tuple(extensions)
    if len(wanted) > MAX_BINDINGS:
        raise StoreError(f"bindings: {len(wanted)} extensions, at most {MAX_BINDINGS}")
    if any(not isinstance(ext, str) or not ext for ext in wanted):
        raise StoreError(f"bindings: {wanted!r}: every extension must be a non-empty string")
    if len(set(wanted)) != len(wanted):
        raise StoreError(f"bindings: {wanted!r}: an extension is listed twice")
    return wanted


def users_from_join(rows: Iterable[Sequence[Any]]) -> list[User]:
    """Users from USER_JOIN_COLUMNS rows, bindings in their order, sorted by tenant and id
    (in Python: a PostgreSQL database's collation need not be bytewise)."""
    users: dict[tuple[str, str], tuple[Sequence[Any], list[str]]] = {}
    for row in rows:
        key = (row[0], row[1])
        if key not in users:
            users[key] = (row, [])
        if row[6] is not None:
            users[key][1].append(row[6])
    return [User(tenant=row[0], user_id=row[1], number=row[2], display_name=row[3],
                 timezone=row[4], admin=bool(row[5]), bindings=tuple(bound))
            for _, (row, bound) in sorted(users.items())]


def rebind(user_id: str, wanted: tuple[str, ...],
           before: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Hot-desking: `user_id` gets exactly `wanted`; every other user in `before` (each
    affected user's bindings now) loses those of `wanted` it holds, keeping the rest in
    order. Returns the new bindings of the users whose bindings change."""
    after = {user_id: wanted}
    for other, bound in before.items():
        if other != user_id:
            after[other] = tuple(ext for ext in bound if ext not in wanted)
    return {uid: bound for uid, bound in after.items() if before.get(uid, ()) != bound}


# -- portions and traces ---------------------------------------------------------------------


def portion_from_row(tenant: str, user_id: str, row: Sequence[Any] | None) -> Portion:
    """From (version, body, updated_at), or the never-written portion for None."""
    if row is None:
        return Portion(tenant=tenant, user_id=user_id)
    return Portion(tenant=tenant, user_id=user_id, version=int(row[0]),
                   body=decode_json(row[1]), updated_at=float(row[2]))


TRACE_COLUMNS = ("tenant, uniqueid, at, venue, user_id, request, previous, outcome, rule, "
                 "why, inputs, call_data")


def trace_row(record: TraceRecord) -> tuple[Any, ...]:
    """The TRACE_COLUMNS values of `record` (mappings as JSON text)."""
    if not math.isfinite(record.at):
        raise StoreError(f"trace of {record.uniqueid!r}: time {record.at!r} is not finite")
    return (record.tenant, record.uniqueid, float(record.at), record.venue, record.user_id,
            int(record.request), record.previous, record.outcome, record.rule, record.why,
            encode_json(record.inputs, f"trace of {record.uniqueid!r}: inputs"),
            encode_json(record.call, f"trace of {record.uniqueid!r}: call"))


def trace_from_row(row: Sequence[Any]) -> TraceRecord:
    return TraceRecord(tenant=row[0], uniqueid=row[1], at=float(row[2]), venue=row[3],
                       user_id=row[4], request=int(row[5]), previous=row[6], outcome=row[7],
                       rule=row[8], why=row[9], inputs=decode_json(row[10]),
                       call=decode_json(row[11]))


# -- VTS state ------------------------------------------------------------------------------


def vts_state_rows(states: Mapping[str, Mapping[str, Any]],
                   now: float) -> list[tuple[str, str, float]]:
    """(tenant, body as JSON text, updated_at) for each tenant, sorted by tenant (two
    writers then lock rows in one order)."""
    if not math.isfinite(now):
        raise StoreError(f"vts state: time {now!r} is not finite")
    for tenant in states:
        if not isinstance(tenant, str) or not tenant:
            raise StoreError(f"vts state: tenant {tenant!r} must be a non-empty string")
    return [(tenant, encode_json(states[tenant], f"vts state of {tenant!r}"), float(now))
            for tenant in sorted(states)]


def vts_state_from_row(row: Sequence[Any]) -> VtsState:
    """From (tenant, body, updated_at)."""
    return VtsState(tenant=row[0], body=decode_json(row[1]), updated_at=float(row[2]))
