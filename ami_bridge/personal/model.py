"""Shapes of the personal router and the one interface its stores implement.

A tenant has users; a user has a personal number (what callers dial), bindings (the
tenant extensions whose devices ring for the user; hot-desking moves them at run time),
and one portion of routing rules of his or her own, versioned: every write bumps the
version, and a write carrying a stale version is refused (`Conflict`, HTTP 409). The
rules inside a portion are kept as validated JSON (`ami_bridge.tenants.personal` checks
them at write time and evaluates them in the VTS at call time). A trace records one
routing decision. A VTS state is one tenant's VTS's small saved state (its round-robin
cursors). `Store` is async; its backends are `ami_bridge.personal.sqlite` (the
embedded default) and `ami_bridge.personal.postgres` (several bridges sharing users).
Pure data: no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

USER_ID_RE = re.compile(r"[a-z][a-z0-9._-]{0,63}")  # fullmatch; login names
MAX_DISPLAY_NAME = 80
MAX_BINDINGS = 8  # extensions one user may be bound to (rung at once)


class StoreError(Exception):
    """The store refused an operation; the message says what and why."""


class Conflict(StoreError):
    """A portion write carried a version that is no longer the current one."""

    def __init__(self, current: int) -> None:
        super().__init__(f"stale version: the current version is {current}")
        self.current = current


class NotFound(StoreError):
    """No such user (in that tenant)."""


class Exists(StoreError):
    """A user with that id, or a user with that number, already exists in the tenant."""


@dataclass(frozen=True)
class User:
    tenant: str
    user_id: str
    number: str  # personal number: one of the tenant's [personal.numbers]
    display_name: str = ""
    timezone: str = ""  # "": the tenant's
    bindings: tuple[str, ...] = ()  # tenant extensions whose devices ring for the user
    admin: bool = False  # tenant admin: manages that tenant's users


@dataclass(frozen=True)
class Portion:
    """One user's own routing rules at one version (version 0: never written)."""

    tenant: str
    user_id: str
    version: int = 0
    # The validated portion body: {"rules": [...], "vip": [...], "blocked": [...],
    # "saved": [...]} as JSON-compatible data (no "version" key inside).
    body: Mapping[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0  # Unix time of the write


@dataclass(frozen=True)
class Session:
    """A login session: the token itself is never stored, only its SHA-256."""

    token_hash: str
    tenant: str
    user_id: str
    expires_at: float  # Unix time


@dataclass(frozen=True)
class TraceRecord:
    """One routing decision: why a call went where it went."""

    tenant: str
    uniqueid: str  # Asterisk's channel unique id (the call)
    at: float  # Unix time of the decision
    venue: str
    user_id: str = ""  # "" for a tenant-protocol venue
    request: int = 1  # the call's Nth route request (re-entries after busy / no answer)
    previous: str = ""  # "KIND:VALUE STATUS" that led to this request, "" on the first
    outcome: str = ""  # "route KIND:VALUE", "reject busy", "default timeout", ...
    rule: str = ""  # the rule that matched ("#2 night", "default", ...)
    why: str = ""  # a sentence: why that rule matched
    inputs: Mapping[str, str] = field(default_factory=dict)  # time, timezone, caller class...
    call: Mapping[str, str] = field(default_factory=dict)  # ani, dnis... (for replay)


@dataclass(frozen=True)
class VtsState:
    """A VTS's saved state for one tenant (protocol 2.2, ami_bridge.vts_state): a small
    JSON object the bridge checked (its size, its tenant) before it got here."""

    tenant: str
    body: Mapping[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0  # Unix time of the write


class Store(Protocol):
    """The personal router's persistent state. Every write is one transaction."""

    async def open(self) -> None:
        """Connect and apply pending schema migrations (in one transaction)."""

    async def close(self) -> None: ...

    # -- users and bindings ---------------------------------------------------------
    async def create_user(self, user: User, password_hash: str | None = None) -> None:
        """Raises Exists (same id or same number in the tenant)."""

    async def get_user(self, tenant: str, user_id: str) -> User | None: ...

    async def list_users(self, tenant: str | None = None) -> list[User]:
        """That tenant's users (None: every tenant's), sorted by tenant and id."""

    async def update_user(self, user: User) -> None:
        """Replace display name, timezone, number, admin (not bindings). NotFound/Exists."""

    async def delete_user(self, tenant: str, user_id: str) -> None:
        """With the user's portion, sessions and bindings; NotFound."""

    async def set_bindings(self, tenant: str, user_id: str,
                           extensions: Sequence[str]) -> list[User]:
        """Bind the user to exactly these extensions; an extension bound to another user
        of the tenant is taken from that user (hot-desking). Returns every user whose
        bindings changed, as they are now. NotFound."""

    async def password_hash(self, tenant: str, user_id: str) -> str | None: ...

    async def set_password_hash(self, tenant: str, user_id: str, password_hash: str) -> None:
        """Replace the password hash and end every session of the user (one transaction).
        NotFound."""

    # -- portions ---------------------------------------------------------------------
    async def get_portion(self, tenant: str, user_id: str) -> Portion:
        """The current portion (version 0 and an empty body if never written). NotFound."""

    async def put_portion(self, tenant: str, user_id: str, body: Mapping[str, Any],
                          expected_version: int) -> Portion:
        """Store `body` as version expected_version + 1 if the current version is
        `expected_version`; else raise Conflict. NotFound."""

    async def all_portions(self, tenant: str | None = None) -> list[Portion]:
        """For loading the directory at start."""

    # -- sessions -----------------------------------------------------------------------
    async def add_session(self, session: Session) -> None: ...

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        """None when unknown or expired."""

    async def delete_session(self, token_hash: str) -> None: ...

    async def purge_sessions(self, now: float) -> int: ...

    # -- traces -------------------------------------------------------------------------
    async def add_traces(self, records: Sequence[TraceRecord]) -> None: ...

    async def traces(self, tenant: str, *, uniqueid: str | None = None,
                     user_id: str | None = None, limit: int = 100) -> list[TraceRecord]:
        """Newest first; by call, by user or the tenant's."""

    async def prune_traces(self, *, before: float, max_rows_per_tenant: int) -> int:
        """Drop traces older than `before` and beyond the newest max_rows per tenant."""

    # -- VTS state (protocol 2.2) ---------------------------------------------------------
    async def put_vts_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the saved state of each tenant in `states` (tenant -> body), all in one
        transaction; a tenant not in `states` keeps its own."""

    async def vts_states(self) -> list[VtsState]:
        """Every tenant's saved state, sorted by tenant (loaded at start)."""
