"""The personal router's in-memory view, read by the intermediary at call time.

A call to a user's number must not wait for a disk or a database: the intermediary asks
this directory (no I/O, no event loop) for the user behind a tenant's number, the
user's bindings and current portion. The daemon fills it from the store at start; the
HTTP API puts every user and portion it has written, so the next call sees a change
(the write is in the store first: a crash loses nothing the directory showed). A
portion is only ever replaced by a newer version, so a late writer cannot roll it back.
With several bridges on one PostgreSQL store, `changed` (set by the personal service)
is told the (tenant, user id) of every such API write, for the bus; a change another
bridge made comes back through `refresh` (what the store holds now) or a full `load`,
which tell `changed` nothing (no echo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ami_bridge.personal.model import Portion, User


class Directory:
    def __init__(self) -> None:
        self._users: dict[tuple[str, str], User] = {}
        self._by_number: dict[tuple[str, str], str] = {}
        self._portions: dict[tuple[str, str], Portion] = {}
        self.changed: Callable[[str, str], None] | None = None  # (tenant, user id)

    def load(self, users: Iterable[User], portions: Iterable[Portion]) -> None:
        """Replace everything (at start, from the store)."""
        self._users.clear()
        self._by_number.clear()
        self._portions.clear()
        for user in users:
            self._put_user(user)
        for portion in portions:
            self._put_portion(portion)

    def refresh(self, tenant: str, user_id: str, user: User | None,
                portion: Portion | None) -> None:
        """What the store holds now for one user (None: gone), after another bridge
        changed it; `changed` is not told."""
        if user is None:
            self._drop_user(tenant, user_id)
            return
        self._put_user(user)
        if portion is not None:
            self._put_portion(portion)

    def put_user(self, user: User) -> None:
        self._put_user(user)
        self._tell(user.tenant, user.user_id)

    def drop_user(self, tenant: str, user_id: str) -> None:
        self._drop_user(tenant, user_id)
        self._tell(tenant, user_id)

    def put_portion(self, portion: Portion) -> None:
        self._put_portion(portion)
        self._tell(portion.tenant, portion.user_id)

    def _tell(self, tenant: str, user_id: str) -> None:
        if self.changed is not None:
            self.changed(tenant, user_id)

    def _put_user(self, user: User) -> None:
        key = (user.tenant, user.user_id)
        old = self._users.get(key)
        if old is not None and self._by_number.get((old.tenant, old.number)) == old.user_id:
            del self._by_number[(old.tenant, old.number)]
        self._users[key] = user
        self._by_number[(user.tenant, user.number)] = user.user_id

    def _drop_user(self, tenant: str, user_id: str) -> None:
        user = self._users.pop((tenant, user_id), None)
        self._portions.pop((tenant, user_id), None)
        if user is not None and self._by_number.get((tenant, user.number)) == user_id:
            del self._by_number[(tenant, user.number)]

    def _put_portion(self, portion: Portion) -> None:
        key = (portion.tenant, portion.user_id)
        current = self._portions.get(key)
        if current is None or portion.version >= current.version:
            self._portions[key] = portion

    def user(self, tenant: str, user_id: str) -> User | None:
        return self._users.get((tenant, user_id))

    def user_portion(self, tenant: str, user_id: str) -> tuple[User, Portion] | None:
        """A user by id, with the current portion."""
        user = self._users.get((tenant, user_id))
        if user is None:
            return None
        return user, self._portions.get((tenant, user_id)) or Portion(tenant, user_id)

    def by_number(self, tenant: str, number: str) -> tuple[User, Portion] | None:
        """The user a tenant's personal number belongs to, with the current portion."""
        user_id = self._by_number.get((tenant, number))
        if user_id is None:
            return None
        user = self._users[(tenant, user_id)]
        portion = self._portions.get((tenant, user_id)) or Portion(tenant, user_id)
        return user, portion

    def __len__(self) -> int:
        return len(self._users)
