"""An in-memory `Store` for the API tests (tests only: the product ships SQLite and
PostgreSQL). Each method runs without awaiting in the middle, so on one event loop
every write is atomic, as a backend's transaction is."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ami_bridge.personal.model import (
    Conflict,
    Exists,
    NotFound,
    Portion,
    Session,
    TraceRecord,
    User,
    VtsState,
)


class MemoryStore:
    def __init__(self, clock: Any = None) -> None:
        self.users: dict[tuple[str, str], User] = {}
        self.hashes: dict[tuple[str, str], str] = {}
        self.portions: dict[tuple[str, str], Portion] = {}
        self.sessions: dict[str, Session] = {}
        self.records: list[TraceRecord] = []
        self.vts: dict[str, VtsState] = {}
        self._clock = clock

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _need(self, tenant: str, user_id: str) -> User:
        user = self.users.get((tenant, user_id))
        if user is None:
            raise NotFound(f"no user {user_id!r} in tenant {tenant!r}")
        return user

    def _number_taken(self, user: User) -> bool:
        return any(u.tenant == user.tenant and u.number == user.number
                   and u.user_id != user.user_id for u in self.users.values())

    async def create_user(self, user: User, password_hash: str | None = None) -> None:
        if (user.tenant, user.user_id) in self.users or self._number_taken(user):
            raise Exists(f"user {user.user_id!r} or number {user.number!r} exists")
        self.users[(user.tenant, user.user_id)] = user
        if password_hash is not None:
            self.hashes[(user.tenant, user.user_id)] = password_hash

    async def get_user(self, tenant: str, user_id: str) -> User | None:
        return self.users.get((tenant, user_id))

    async def list_users(self, tenant: str | None = None) -> list[User]:
        return sorted((u for u in self.users.values() if tenant in (None, u.tenant)),
                      key=lambda u: (u.tenant, u.user_id))

    async def update_user(self, user: User) -> None:
        old = self._need(user.tenant, user.user_id)
        if self._number_taken(user):
            raise Exists(f"number {user.number!r} belongs to another user")
        self.users[(user.tenant, user.user_id)] = dataclasses.replace(user,
                                                                      bindings=old.bindings)

    async def delete_user(self, tenant: str, user_id: str) -> None:
        self._need(tenant, user_id)
        del self.users[(tenant, user_id)]
        self.hashes.pop((tenant, user_id), None)
        self.portions.pop((tenant, user_id), None)
        for digest in [d for d, s in self.sessions.items()
                       if (s.tenant, s.user_id) == (tenant, user_id)]:
            del self.sessions[digest]

    async def set_bindings(self, tenant: str, user_id: str,
                           extensions: Sequence[str]) -> list[User]:
        user = self._need(tenant, user_id)
        changed: list[User] = []
        for other in list(self.users.values()):
            if other.tenant != tenant or other.user_id == user_id:
                continue
            kept = tuple(b for b in other.bindings if b not in extensions)
            if kept != other.bindings:
                other = dataclasses.replace(other, bindings=kept)
                self.users[(tenant, other.user_id)] = other
                changed.append(other)
        if tuple(extensions) != user.bindings:
            user = dataclasses.replace(user, bindings=tuple(extensions))
            self.users[(tenant, user_id)] = user
            changed.insert(0, user)
        return changed

    async def password_hash(self, tenant: str, user_id: str) -> str | None:
        return self.hashes.get((tenant, user_id))

    async def set_password_hash(self, tenant: str, user_id: str, password_hash: str) -> None:
        self._need(tenant, user_id)
        self.hashes[(tenant, user_id)] = password_hash

    async def get_portion(self, tenant: str, user_id: str) -> Portion:
        self._need(tenant, user_id)
        return self.portions.get((tenant, user_id)) or Portion(tenant, user_id)

    async def put_portion(self, tenant: str, user_id: str, body: Mapping[str, Any],
                          expected_version: int) -> Portion:
        current = await self.get_portion(tenant, user_id)
        if current.version != expected_version:
            raise Conflict(current.version)
        portion = Portion(tenant, user_id, expected_version + 1, dict(body), 0.0)
        self.portions[(tenant, user_id)] = portion
        return portion

    async def all_portions(self, tenant: str | None = None) -> list[Portion]:
        return [p for p in self.portions.values() if tenant in (None, p.tenant)]

    async def add_session(self, session: Session) -> None:
        self.sessions[session.token_hash] = session

    async def get_session(self, token_hash: str, now: float) -> Session | None:
        session = self.sessions.get(token_hash)
        return session if session is not None and session.expires_at > now else None

    async def delete_session(self, token_hash: str) -> None:
        self.sessions.pop(token_hash, None)

    async def purge_sessions(self, now: float) -> int:
        gone = [d for d, s in self.sessions.items() if s.expires_at <= now]
        for digest in gone:
            del self.sessions[digest]
        return len(gone)

    async def add_traces(self, records: Sequence[TraceRecord]) -> None:
        self.records.extend(records)

    async def traces(self, tenant: str, *, uniqueid: str | None = None,
                     user_id: str | None = None, limit: int = 100) -> list[TraceRecord]:
        found = [r for r in self.records if r.tenant == tenant
                 and uniqueid in (None, r.uniqueid) and user_id in (None, r.user_id)]
        found.sort(key=lambda r: r.at, reverse=True)
        return found[:limit]

    async def prune_traces(self, *, before: float, max_rows_per_tenant: int) -> int:
        kept = [r for r in self.records if r.at >= before]
        gone = len(self.records) - len(kept)
        self.records = kept
        return gone

    async def put_vts_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        at = self._clock() if self._clock is not None else 0.0
        for tenant, body in states.items():
            self.vts[tenant] = VtsState(tenant, dict(body), at)

    async def vts_states(self) -> list[VtsState]:
        return [self.vts[t] for t in sorted(self.vts)]
