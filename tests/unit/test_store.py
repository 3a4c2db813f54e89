"""Both personal store backends against one set of tests: the `Store` contract of
ami_bridge/personal/model.py.

Every test runs on SQLite (a fresh file) and on PostgreSQL (a fresh database of the
session's throw-away server, tests/unit/conftest.py). Besides each method's results and
refusals (Exists, NotFound, Conflict): migrations (reopening is idempotent, a newer schema
is refused), hot-desking, cascades, trace pruning, session expiry, two writers racing for
one portion version (really concurrent: two stores, two threads or two connections), and
a writer process SIGKILLed at random moments, after which every portion is a whole body of
its own version and no acknowledged write is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from ami_bridge.personal import rows
from ami_bridge.personal.model import (
    Conflict,
    Exists,
    NotFound,
    Session,
    Store,
    StoreError,
    TraceRecord,
    User,
    VtsState,
)
from ami_bridge.personal.postgres import PostgresStore
from ami_bridge.personal.sqlite import SqliteStore
from harness import procs
from harness.postgres import PostgresServer
from tests.unit.store_writer import body_for

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
CLOCK = 1_800_000_000.0  # the stores' clock in these tests (a portion's updated_at)


@dataclass
class Backend:
    """Where one test's store lives; `store()` makes another store on the same data."""

    kind: str  # "sqlite" | "postgresql"
    where: str  # file path or DSN

    def store(self) -> Store:
        if self.kind == "sqlite":
            return SqliteStore(Path(self.where), clock=lambda: CLOCK)
        return PostgresStore(self.where, clock=lambda: CLOCK)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement directly (autocommit), behind the store's back."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.where, isolation_level=None)) as conn:
                return list(conn.execute(statement))
        with psycopg.connect(self.where, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "state" / "personal.sqlite3"))
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Backend("postgresql", server.create_schema())


def run(backend: Backend, test: Callable[[Store], Awaitable[T]]) -> T:
    """`test(store)` on an opened store of `backend`, closed afterwards."""
    async def main() -> T:
        store = backend.store()
        await store.open()
        try:
            return await test(store)
        finally:
            await store.close()
    return asyncio.run(main())


ALICE = User("acme", "alice", "2001", display_name="Alice", timezone="Europe/Berlin",
             bindings=("1001",), admin=True)
BOB = User("acme", "bob", "2002", bindings=("1002", "1003"))
CAROL = User("acme", "carol", "2003")
ZED = User("zeta", "alice", "2001", bindings=("1001",))  # same id, number, ext: other tenant


async def _seed(store: Store) -> None:
    for user in (ALICE, BOB, CAROL, ZED):
        await store.create_user(user)


# -- migrations and files ------------------------------------------------------------------


def _schema_version(backend: Backend) -> int:
    return int(backend.sql("SELECT version FROM schema_version")[0][0])


def test_open_migrates_once_and_reopening_keeps_the_data(backend: Backend) -> None:
    run(backend, _seed)
    assert _schema_version(backend) == len(rows.MIGRATIONS)
    assert run(backend, lambda s: s.get_user("acme", "alice")) == ALICE
    assert backend.sql("SELECT count(*) FROM schema_version") == [(1,)]
    assert _schema_version(backend) == len(rows.MIGRATIONS)


def test_a_newer_schema_is_refused_naming_both_versions(backend: Backend) -> None:
    run(backend, _seed)
    newer = len(rows.MIGRATIONS) + 1
    backend.sql(f"UPDATE schema_version SET version = {newer}")

    async def reopen() -> None:
        store = backend.store()
        with pytest.raises(StoreError) as caught:
            await store.open()
        assert f"schema version {newer}" in str(caught.value)
        assert f"version {len(rows.MIGRATIONS)})" in str(caught.value)
        await store.close()  # harmless after a failed open

    asyncio.run(reopen())
    assert _schema_version(backend) == newer  # untouched


def test_two_stores_opening_together_migrate_once(backend: Backend) -> None:
    async def main() -> None:
        stores = [backend.store() for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].create_user(ALICE)
        assert await stores[2].get_user("acme", "alice") == ALICE
        for store in stores:
            await store.close()

    asyncio.run(main())
    assert _schema_version(backend) == len(rows.MIGRATIONS)


def test_sqlite_file_is_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "personal.sqlite3"
    old = os.umask(0o022)
    try:
        run(Backend("sqlite", str(path)), _seed)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert Backend("sqlite", str(path)).sql("PRAGMA journal_mode") == [("wal",)]


def test_a_closed_store_refuses_calls(backend: Backend) -> None:
    async def main() -> None:
        store = backend.store()
        with pytest.raises(StoreError, match="not open"):
            await store.list_users()
        await store.open()
        await store.close()
        with pytest.raises(StoreError, match="not open"):
            await store.get_user("acme", "alice")

    asyncio.run(main())


# -- users ---------------------------------------------------------------------------------


def test_users_are_listed_sorted_and_per_tenant(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        assert await store.list_users() == [ALICE, BOB, CAROL, ZED]
        assert await store.list_users("acme") == [ALICE, BOB, CAROL]
        assert await store.list_users("zeta") == [ZED]
        assert await store.list_users("nobody") == []
        assert await store.get_user("zeta", "alice") == ZED
        assert await store.get_user("zeta", "bob") is None
        assert await store.get_user("acme", "dave") is None

    run(backend, main)


def test_user_ids_and_numbers_are_unique_per_tenant(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        with pytest.raises(Exists, match="alice"):
            await store.create_user(replace(ALICE, number="2999", bindings=()))
        with pytest.raises(Exists, match="2001"):
            await store.create_user(User("acme", "dave", "2001"))
        with pytest.raises(Exists, match="1002"):  # bound to bob: no silent move here
            await store.create_user(User("acme", "dave", "2004", bindings=("1002",)))
        await store.create_user(User("zeta", "bob", "2002"))  # other tenant: fine
        assert await store.get_user("acme", "dave") is None  # nothing of the refusals
        with pytest.raises(StoreError, match="user id"):
            await store.create_user(User("acme", "Dave!", "2009"))
        with pytest.raises(StoreError, match="twice"):
            await store.create_user(User("acme", "eve", "2010", bindings=("1005", "1005")))

    run(backend, main)


def test_update_user_replaces_the_fields_but_not_the_bindings(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        changed = User("acme", "bob", "2005", display_name="Bob B", timezone="UTC",
                       bindings=("9999",), admin=True)
        await store.update_user(changed)
        assert await store.get_user("acme", "bob") == replace(changed, bindings=BOB.bindings)
        await store.update_user(replace(changed, display_name="Bobby"))  # own number: fine
        with pytest.raises(Exists, match="2001"):
            await store.update_user(replace(changed, number="2001"))
        with pytest.raises(NotFound):
            await store.update_user(User("acme", "dave", "2020"))
        with pytest.raises(NotFound):  # the user first, then the number (both backends)
            await store.update_user(User("acme", "dave", "2001"))
        with pytest.raises(NotFound):
            await store.update_user(replace(BOB, tenant="zeta"))
        assert (await store.get_user("acme", "bob")) == replace(
            changed, display_name="Bobby", bindings=BOB.bindings)

    run(backend, main)


def test_password_hashes(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await store.create_user(ALICE, password_hash="$argon2id$a")
        await store.create_user(BOB)
        assert await store.password_hash("acme", "alice") == "$argon2id$a"
        assert await store.password_hash("acme", "bob") is None
        assert await store.password_hash("acme", "nobody") is None
        await store.set_password_hash("acme", "bob", "$argon2id$b")
        assert await store.password_hash("acme", "bob") == "$argon2id$b"
        with pytest.raises(NotFound):
            await store.set_password_hash("zeta", "bob", "x")

    run(backend, main)


def test_delete_user_cascades_to_portion_sessions_and_bindings(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        await store.put_portion("acme", "bob", {"vip": ["1"]}, 0)
        await store.put_portion("acme", "alice", {"vip": ["2"]}, 0)
        await store.add_session(Session("h-bob", "acme", "bob", CLOCK + 60))
        await store.add_session(Session("h-alice", "acme", "alice", CLOCK + 60))
        await store.delete_user("acme", "bob")
        assert await store.get_user("acme", "bob") is None
        assert await store.get_session("h-bob", CLOCK) is None
        assert [(p.tenant, p.user_id) for p in await store.all_portions()] == [
            ("acme", "alice")]
        with pytest.raises(NotFound):
            await store.delete_user("acme", "bob")
        # The extensions are free again, and the same id starts afresh.
        await store.create_user(User("acme", "bob", "2002", bindings=("1002", "1003")))
        assert (await store.get_portion("acme", "bob")).version == 0
        # Nobody else lost anything.
        assert await store.get_session("h-alice", CLOCK) is not None
        assert (await store.get_portion("acme", "alice")).version == 1
        assert await store.list_users() == [ALICE, BOB, CAROL, ZED]

    run(backend, main)
    assert backend.sql("SELECT count(*) FROM bindings") == [(4,)]


# -- bindings ------------------------------------------------------------------------------


def test_hot_desking_moves_an_extension_and_reports_every_changed_user(
        backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        # carol takes 1003 from bob and 1001 from alice, and binds a free 1004.
        changed = await store.set_bindings("acme", "carol", ["1004", "1003", "1001"])
        assert changed == [replace(ALICE, bindings=()), replace(BOB, bindings=("1002",)),
                           replace(CAROL, bindings=("1004", "1003", "1001"))]
        assert await store.list_users("acme") == changed
        assert await store.get_user("zeta", "alice") == ZED  # same extension, other tenant
        # Again the same: nothing changes, nobody to tell.
        assert await store.set_bindings("acme", "carol", ("1004", "1003", "1001")) == []
        # The order is kept and is a change.
        assert await store.set_bindings("acme", "carol", ["1001", "1003", "1004"]) == [
            replace(CAROL, bindings=("1001", "1003", "1004"))]
        # Unbinding everything.
        assert await store.set_bindings("acme", "carol", []) == [replace(CAROL, bindings=())]
        with pytest.raises(NotFound):
            await store.set_bindings("acme", "dave", ["1001"])
        with pytest.raises(NotFound):
            await store.set_bindings("zeta", "bob", [])
        with pytest.raises(StoreError, match="at most 8"):
            await store.set_bindings("acme", "bob", [str(1000 + i) for i in range(9)])
        with pytest.raises(StoreError, match="twice"):
            await store.set_bindings("acme", "bob", ["1005", "1005"])
        assert await store.get_user("acme", "bob") == replace(BOB, bindings=("1002",))

    run(backend, main)


def test_racing_hot_desks_leave_each_extension_with_one_user(backend: Backend) -> None:
    async def main() -> None:
        first, second = backend.store(), backend.store()
        await first.open()
        await second.open()
        await _seed(first)
        for _ in range(5):
            await asyncio.gather(first.set_bindings("acme", "bob", ["1001", "1005"]),
                                 second.set_bindings("acme", "carol", ["1005", "1001"]))
            users = await first.list_users("acme")
            bound = [ext for user in users for ext in user.bindings]
            assert sorted(bound) == ["1001", "1005"]  # each once, one user holds both
            assert {len(u.bindings) for u in users} == {0, 2}
        await first.close()
        await second.close()

    asyncio.run(main())


# -- portions --------------------------------------------------------------------------------


def test_portions_are_versioned_and_stale_writes_conflict(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        never = await store.get_portion("acme", "alice")
        assert (never.version, dict(never.body), never.updated_at) == (0, {}, 0.0)
        first = await store.put_portion("acme", "alice", {"vip": ["0171*"], "rules": []}, 0)
        assert (first.version, first.body, first.updated_at) == (
            1, {"vip": ["0171*"], "rules": []}, CLOCK)
        assert await store.get_portion("acme", "alice") == first
        for stale in (0, 2, 7, -1):
            with pytest.raises(Conflict) as caught:
                await store.put_portion("acme", "alice", {"vip": ["lost"]}, stale)
            assert caught.value.current == 1
        second = await store.put_portion("acme", "alice", {"blocked": ["withheld"]}, 1)
        assert second.version == 2
        assert (await store.get_portion("acme", "alice")).body == {"blocked": ["withheld"]}
        # Not JSON: refused before anything is stored.
        with pytest.raises(StoreError, match="JSON"):
            await store.put_portion("acme", "alice", {"vip": {1, 2}}, 2)
        with pytest.raises(StoreError, match="JSON"):
            await store.put_portion("acme", "alice", {"x": float("nan")}, 2)
        assert (await store.get_portion("acme", "alice")).version == 2
        with pytest.raises(NotFound):
            await store.get_portion("acme", "dave")
        with pytest.raises(NotFound):
            await store.put_portion("acme", "dave", {}, 0)
        with pytest.raises(NotFound):
            await store.put_portion("zeta", "bob", {}, 0)

    run(backend, main)


def test_all_portions_per_tenant_and_everyone(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        await store.put_portion("zeta", "alice", {"vip": ["z"]}, 0)
        await store.put_portion("acme", "carol", {"vip": ["c"]}, 0)
        await store.put_portion("acme", "alice", {"vip": ["a"]}, 0)
        everyone = await store.all_portions()
        assert [(p.tenant, p.user_id, p.version, p.body) for p in everyone] == [
            ("acme", "alice", 1, {"vip": ["a"]}), ("acme", "carol", 1, {"vip": ["c"]}),
            ("zeta", "alice", 1, {"vip": ["z"]})]
        assert await store.all_portions("zeta") == everyone[2:]
        assert await store.all_portions("nobody") == []

    run(backend, main)


def test_two_writers_with_the_same_version_exactly_one_wins(backend: Backend) -> None:
    """Two stores (SQLite: two connections in two worker threads; PostgreSQL: two pools)
    write the same version of one portion at the same time, round after round."""
    async def main() -> None:
        first, second = backend.store(), backend.store()
        await first.open()
        await second.open()
        await first.create_user(ALICE)
        for version in range(12):
            bodies = [{"vip": [f"first {version}"]}, {"vip": [f"second {version}"]}]
            results = await asyncio.gather(
                first.put_portion("acme", "alice", bodies[0], version),
                second.put_portion("acme", "alice", bodies[1], version),
                return_exceptions=True)
            won = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(won) == 1, results
            assert len(lost) == 1 and isinstance(lost[0], Conflict), results
            assert lost[0].current == version + 1
            stored = await second.get_portion("acme", "alice")
            assert (stored.version, stored.body) == (version + 1, bodies[won[0]])
        await first.close()
        await second.close()

    asyncio.run(main())


# -- sessions --------------------------------------------------------------------------------


def test_sessions_expire_and_are_purged(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        short = Session("a" * 64, "acme", "alice", CLOCK + 10)
        long = Session("b" * 64, "zeta", "alice", CLOCK + 100)
        await store.add_session(short)
        await store.add_session(long)
        assert await store.get_session(short.token_hash, CLOCK) == short
        assert await store.get_session(short.token_hash, CLOCK + 9.5) == short
        assert await store.get_session(short.token_hash, CLOCK + 10) is None  # expired
        assert await store.get_session("c" * 64, CLOCK) is None
        with pytest.raises(Exists):
            await store.add_session(short)
        with pytest.raises(NotFound):
            await store.add_session(Session("d" * 64, "acme", "dave", CLOCK + 10))
        assert await store.purge_sessions(CLOCK + 10) == 1
        assert await store.purge_sessions(CLOCK + 10) == 0
        assert await store.get_session(long.token_hash, CLOCK + 10) == long
        await store.delete_session(long.token_hash)
        await store.delete_session(long.token_hash)  # unknown: no error
        assert await store.get_session(long.token_hash, CLOCK) is None

    run(backend, main)


def test_a_new_password_ends_the_users_sessions_only(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await _seed(store)
        mine = [Session(c * 64, "acme", "alice", CLOCK + 100) for c in "ab"]
        other_tenant = Session("c" * 64, "zeta", "alice", CLOCK + 100)
        for session in (*mine, other_tenant):
            await store.add_session(session)
        await store.set_password_hash("acme", "alice", "$argon2id$new")
        assert [await store.get_session(s.token_hash, CLOCK) for s in mine] == [None, None]
        assert await store.get_session(other_tenant.token_hash, CLOCK) == other_tenant
        assert await store.password_hash("acme", "alice") == "$argon2id$new"

    run(backend, main)


# -- traces ----------------------------------------------------------------------------------


def _trace(tenant: str, uniqueid: str, at: float, user_id: str = "", **kw: Any) -> TraceRecord:
    return TraceRecord(tenant=tenant, uniqueid=uniqueid, at=at, venue="acme-personal",
                       user_id=user_id, **kw)


def test_traces_newest_first_by_call_by_user_and_per_tenant(backend: Backend) -> None:
    full = _trace("acme", "c1", 100.0, "alice", request=2, previous="phones:1001 NOANSWER",
                  outcome="route extension:1002", rule="#1 night",
                  why="caller 0171234 matched callers '0171*'",
                  inputs={"time": "19:05", "caller_class": "other"},
                  call={"ani": "0171234", "dnis": "2001"})
    records = [_trace("acme", "c1", 99.0, "alice"), full, _trace("acme", "c2", 101.0, "bob"),
               _trace("acme", "c3", 50.0), _trace("zeta", "c1", 200.0, "alice")]

    async def main(store: Store) -> None:
        await store.add_traces(records)
        await store.add_traces([])
        assert await store.traces("acme") == [records[2], full, records[0], records[3]]
        assert await store.traces("acme", uniqueid="c1") == [full, records[0]]
        assert await store.traces("acme", user_id="alice") == [full, records[0]]
        assert await store.traces("acme", user_id="alice", uniqueid="c2") == []
        assert await store.traces("acme", limit=2) == [records[2], full]
        assert await store.traces("zeta") == [records[4]]
        assert await store.traces("nobody") == []

    run(backend, main)


def test_traces_are_pruned_by_age_and_by_rows_per_tenant(backend: Backend) -> None:
    acme = [_trace("acme", f"a{i}", 1000.0 + i) for i in range(10)]
    zeta = [_trace("zeta", f"z{i}", 1000.0 + i) for i in range(4)]

    async def main(store: Store) -> None:
        await store.add_traces(acme + zeta)
        # Age first: a0..a2 and z0..z2 are older than 1003.
        assert await store.prune_traces(before=1003.0, max_rows_per_tenant=5) == 6 + 2
        assert await store.traces("acme") == acme[:4:-1]  # the newest five: a9..a5
        assert await store.traces("zeta") == [zeta[3]]
        assert await store.prune_traces(before=0.0, max_rows_per_tenant=5) == 0
        assert await store.prune_traces(before=0.0, max_rows_per_tenant=0) == 6
        assert await store.traces("acme") == []

    run(backend, main)


# -- VTS state (protocol 2.2) ---------------------------------------------------------------


def test_vts_states_are_replaced_per_tenant_and_survive_a_reopen(backend: Backend) -> None:
    async def write(store: Store) -> None:
        assert await store.vts_states() == []
        await store.put_vts_states({"zeta": {"round_robin": {"r": 1}},
                                    "acme": {"round_robin": {"r": 0}}})
        await store.put_vts_states({"acme": {"round_robin": {"r": 2, "s": 1}, "u": "\u00fc"}})
        await store.put_vts_states({})  # nothing to write: no transaction, no error

    run(backend, write)
    assert run(backend, lambda s: s.vts_states()) == [
        VtsState("acme", {"round_robin": {"r": 2, "s": 1}, "u": "\u00fc"}, CLOCK),
        VtsState("zeta", {"round_robin": {"r": 1}}, CLOCK)]  # its own, untouched
    assert backend.sql("SELECT count(*) FROM vts_state") == [(2,)]


def test_a_vts_state_that_is_not_json_is_refused_and_nothing_written(backend: Backend) -> None:
    async def main(store: Store) -> None:
        await store.put_vts_states({"acme": {"r": 1}})
        with pytest.raises(StoreError, match="vts state of 'zeta'"):
            await store.put_vts_states({"acme": {"r": 2}, "zeta": {"bad": float("nan")}})
        with pytest.raises(StoreError, match="tenant"):
            await store.put_vts_states({"": {"r": 2}})
        assert [s.body for s in await store.vts_states()] == [{"r": 1}]

    run(backend, main)


# -- crashes ---------------------------------------------------------------------------------

WRITER_USERS = ["u0", "u1", "u2", "u3"]


def _kill_a_writer_at_random(backend: Backend, rng: random.Random) -> dict[str, int]:
    """Start the writer, SIGKILL it after a random number of acknowledged writes (and a
    random instant more); the last acknowledged version per user."""
    child = procs.spawn([sys.executable, "-m", "tests.unit.store_writer", backend.kind,
                         backend.where, "acme", *WRITER_USERS], cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acknowledged: dict[str, int] = {}
    try:
        assert child.stdout is not None
        for _ in range(rng.randrange(3, 60)):
            line = child.stdout.readline().decode()
            if not line:
                assert child.stderr is not None
                pytest.fail(f"the writer ended early: {child.stderr.read().decode()}")
            uid, version = line.split()
            acknowledged[uid] = int(version)
        if rng.random() < 0.5:  # not only right after an acknowledgement
            for _ in range(rng.randrange(1, 2000)):
                os.sched_yield()
    finally:
        child.send_signal(signal.SIGKILL)
        with child:  # waits, and closes the pipes
            tail = child.stdout.read().decode() if child.stdout else ""
        for line in tail.splitlines():  # printed before the kill: acknowledged too
            if line.count(" ") == 1:
                uid, version = line.split()
                acknowledged[uid] = int(version)
    assert child.returncode == -signal.SIGKILL
    return acknowledged


def test_a_writer_killed_at_random_leaves_only_whole_portions(backend: Backend) -> None:
    async def seed(store: Store) -> None:
        for i, uid in enumerate(WRITER_USERS):
            await store.create_user(User("acme", uid, f"20{i:02d}"))

    run(backend, seed)
    seed_value = random.randrange(1 << 32)
    rng = random.Random(seed_value)
    for attempt in range(5):
        acknowledged = _kill_a_writer_at_random(backend, rng)
        portions = run(backend, lambda s: s.all_portions("acme"))
        where = f"attempt {attempt}, seed {seed_value}"
        assert acknowledged, where
        for portion in portions:
            assert portion.body == body_for(portion.user_id, portion.version), where
        versions = {p.user_id: p.version for p in portions}
        for uid, version in acknowledged.items():
            # Every acknowledged write is there; at most the one in flight went further.
            assert version <= versions[uid] <= version + 1, (where, uid)


# -- the contract itself ---------------------------------------------------------------------


def test_both_backends_implement_every_method_of_the_protocol() -> None:
    wanted = {name for name in vars(Store) if not name.startswith("_")}
    for cls in (SqliteStore, PostgresStore):
        assert wanted <= set(dir(cls)), (cls, wanted - set(dir(cls)))
    stores: list[Store] = [SqliteStore(Path("unused")), PostgresStore("")]  # mypy checks
    assert len(stores) == 2


# -- the test server itself ------------------------------------------------------------------

_OWNER = """
import sys, time
from harness.postgres import PostgresServer
server = PostgresServer()
server.start()
print(server.process.pid, server.root, flush=True)
time.sleep(120)
"""


@pytest.mark.postgres
def test_the_test_server_dies_with_its_owner_and_leaves_no_directory() -> None:
    """A test process SIGKILLed with its server running: PDEATHSIG takes the server down,
    and the next server's start removes the directory."""
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], cwd=ROOT, stdout=subprocess.PIPE)
    with owner:
        assert owner.stdout is not None
        pid_text, root = owner.stdout.readline().decode().split()
        postmaster = int(pid_text)
        assert procs.alive(postmaster)
        owner.send_signal(signal.SIGKILL)
    try:
        deadline = time.monotonic() + procs.REAP_WAIT_S  # the kernel's SIGKILL: a moment
        while procs.alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not procs.alive(postmaster)
    finally:
        procs.terminate([postmaster] if procs.alive(postmaster) else [], grace_s=0.0)
    assert Path(root).exists()  # nobody removed it yet
    with PostgresServer():
        assert not Path(root).exists()
