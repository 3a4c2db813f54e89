"""The personal router's HTTP API over a real server on a loopback port.

Tenants acme (users ann, bob and the admin ada) and globex (user cid); the operator's
token; a clock the test moves. The store is the real SQLite store (`store` fixture) and
the rules the real rule module (`rules_parser`).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import argon2
import pytest

from ami_bridge.api import make_app, serve
from ami_bridge.api.auth import LoginThrottle
from ami_bridge.api.openapi import document, markdown
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import Store, TraceRecord
from ami_bridge.personal.settings import ApiConfig
from ami_bridge.personal.sqlite import SqliteStore
from ami_bridge.tenant_config import PersonalConfig, TenantConfig
from ami_bridge.tenants import personal
from ami_bridge.tenants.personal import PersonalCall, RuleSet

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_TOKEN = "operator-token-" + "x" * 30
TTL = 600.0
PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-2", "ada": "ada-password-3",
             "cid": "cid-password-4"}
# Cheap argon2 parameters: the tests hash dozens of passwords on a shared 2-core box.
FAST_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass(frozen=True)
class Rules:
    parse_portion: Callable[..., RuleSet]
    evaluate: Callable[..., Any]


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    """The real embedded store (opened and closed by `world`)."""
    return SqliteStore(tmp_path / "state" / "personal.sqlite3")


@pytest.fixture
def rules_parser() -> Rules:
    return Rules(personal.parse_portion, personal.evaluate)


def tenants() -> dict[str, TenantConfig]:
    acme = TenantConfig(
        name="acme", timezone="Europe/Berlin", targets=frozenset({"1001", "1002", "1003"}),
        holidays=(), rules=(), external_prefixes=("0049", "+49"),
        extensions={"1001": "PJSIP/ann", "1002": "PJSIP/bob", "1003": "PJSIP/ada"},
        personal=PersonalConfig(context="acme-personal", vts="acme", voicemail_context="acme",
                                numbers={"2001": "1001", "2002": "1002", "2003": "1003"}))
    globex = TenantConfig(
        name="globex", timezone="UTC", targets=frozenset({"3001"}), holidays=(), rules=(),
        extensions={"3001": "PJSIP/cid"},
        personal=PersonalConfig(context="globex-personal", vts="globex",
                                voicemail_context="globex", numbers={"4001": "3001"}))
    return {"acme": acme, "globex": globex}


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    store: Store
    directory: Directory
    clock: Clock
    url: str
    http: aiohttp.ClientSession
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(self, method: str, path: str, *, as_: str | None = None,
                   token: str | None = None, json: Any = None,
                   data: bytes | None = None) -> tuple[int, Any, Any]:
        headers = {}
        token = token or (self.tokens[as_] if as_ else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, json=json, data=data,
                                     headers=headers) as response:
            body = await response.json() if response.content_type == "application/json" \
                else await response.text()
            return response.status, body, response.headers

    async def login(self, tenant: str, user: str, password: str | None = None) -> str:
        status, body, _ = await self.call("POST", "/api/v1/login", json={
            "tenant": tenant, "user": user, "password": password or PASSWORDS[user]})
        assert status == 200, body
        token: str = body["token"]
        self.tokens[user] = token
        return token


USERS = [("acme", "ann", "2001", False), ("acme", "bob", "2002", False),
         ("acme", "ada", "2003", True), ("globex", "cid", "4001", False)]


def build_app(store: Store, directory: Directory, clock: Clock, rules: Rules) -> Any:
    return make_app(store=store, directory=directory, tenants=tenants,
                    config=ApiConfig(host="127.0.0.1", port=0, operator_token=OPERATOR_TOKEN,
                                     token_ttl=TTL),
                    clock=clock, parse_portion=rules.parse_portion, evaluate=rules.evaluate,
                    hasher=FAST_HASHER)


async def seed(w: World) -> None:
    for tenant, user, number, admin in USERS:
        status, body, _ = await w.call(
            "POST", f"/api/v1/tenants/{tenant}/users", token=OPERATOR_TOKEN,
            json={"user_id": user, "number": number, "display_name": user.title(),
                  "admin": admin, "password": PASSWORDS[user]})
        assert status == 201, body


@contextlib.asynccontextmanager
async def world(store: Store, rules: Rules, *, login: bool = True) -> AsyncIterator[World]:
    directory, clock = Directory(), Clock()
    await store.open()
    app = build_app(store, directory, clock, rules)
    runner = await serve(app, ApiConfig(host="127.0.0.1", port=0))
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            w = World(store, directory, clock, f"http://127.0.0.1:{port}", http)
            await seed(w)
            if login:
                for tenant, user, _, _ in USERS:
                    await w.login(tenant, user)
            yield w
    finally:
        await runner.cleanup()
        await store.close()


def store_files(store: Store) -> list[Path]:
    """The SQLite database file and its write-ahead log."""
    assert isinstance(store, SqliteStore)
    base = store.path
    return [p for p in (base, base.with_name(base.name + "-wal")) if p.exists()]


def run(store: Store, rules: Rules, scenario: Callable[[World], Any], **kw: Any) -> None:
    async def main() -> None:
        async with world(store, rules, **kw) as w:
            await scenario(w)
    asyncio.run(main())


PORTION = {"version": 0, "vip": ["0171*"], "blocked": ["withheld"], "saved": [],
           "rules": [{"name": "mobile", "when": {"callers": ["0172*"]},
                      "action": "forward", "target": "extension:1003"}]}


# -- login, sessions --------------------------------------------------------------------

def test_login_answers_the_same_for_a_wrong_password_and_an_unknown_user(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        status, body, _ = await w.call("POST", "/api/v1/login", json={
            "tenant": "acme", "user": "ann", "password": PASSWORDS["ann"]})
        assert status == 200
        ann_token = body["token"]
        assert body["expires_at"] == w.clock.now + TTL
        assert body["user"]["user_id"] == "ann" and body["user"]["bindings"] == ["1001"]
        status, me, _ = await w.call("GET", "/api/v1/me", token=body["token"])
        assert (status, me["user"]["number"]) == (200, "2001")
        answers = []
        for tenant, user, password in [("acme", "ann", "wrong-password"),
                                       ("acme", "nobody", "wrong-password"),
                                       ("initech", "ann", PASSWORDS["ann"]),
                                       ("globex", "ann", PASSWORDS["ann"])]:
            status, body, _headers = await w.call("POST", "/api/v1/login", json={
                "tenant": tenant, "user": user, "password": password})
            answers.append((status, body))
        assert answers == [(401, {"error": {"field": "password",
                                            "reason": "unknown user or wrong password"}})] * 4
        hashes = [await store.password_hash(t, u) for t, u, _, _ in USERS]
        assert all(h is not None and h.startswith("$argon2id$") for h in hashes)
        # neither the password nor the token is anywhere in the database file
        raw = b"".join(p.read_bytes() for p in store_files(store))
        assert PASSWORDS["ann"].encode() not in raw
        assert ann_token.encode() not in raw
    run(store, rules_parser, scenario, login=False)


def test_failed_logins_are_rate_limited_per_user_and_per_address(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        async def attempt(user: str, password: str) -> tuple[int, Any]:
            status, _body, headers = await w.call("POST", "/api/v1/login", json={
                "tenant": "acme", "user": user, "password": password})
            return status, headers.get("Retry-After")
        for _ in range(5):
            assert (await attempt("ann", "wrong-password"))[0] == 401
        status, retry = await attempt("ann", PASSWORDS["ann"])  # right, but too late
        assert status == 429 and 1 <= int(retry) <= 61
        w.clock.now += 61
        assert (await attempt("ann", PASSWORDS["ann"]))[0] == 200
        # Per address: five failures spread over five names lock the address out.
        for name in ("x1", "x2", "x3", "x4", "x5"):
            assert (await attempt(name, "wrong-password"))[0] == 401
        assert (await attempt("bob", PASSWORDS["bob"]))[0] == 429
    run(store, rules_parser, scenario, login=False)


def test_login_throttle_window() -> None:
    throttle = LoginThrottle(failures=2, window=10.0)
    throttle.failed(100.0, "k")
    assert throttle.retry_after(100.0, "k") == 0
    throttle.failed(103.0, "k")
    assert throttle.retry_after(104.0, "k") == 6.0
    assert throttle.retry_after(110.0, "k") == 0  # the first failure left the window
    throttle.failed(111.0, "k")
    throttle.succeeded("k")
    assert throttle.retry_after(111.0, "k") == 0 and throttle.retry_after(111.0, "j") == 0


def test_tokens_expire_refresh_and_log_out(store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        old = w.tokens["ann"]
        w.clock.now += TTL - 1
        status, body, _ = await w.call("POST", "/api/v1/refresh", token=old)
        assert status == 200 and body["expires_at"] == w.clock.now + TTL
        new = body["token"]
        assert new != old
        assert (await w.call("GET", "/api/v1/me", token=old))[0] == 401
        assert (await w.call("GET", "/api/v1/me", token=new))[0] == 200
        w.clock.now += TTL + 1
        status, body, headers = await w.call("GET", "/api/v1/me", token=new)
        assert status == 401 and body["error"]["field"] == "token"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        bob = w.tokens["bob"] = await w.login("acme", "bob")
        assert (await w.call("POST", "/api/v1/logout", token=bob))[0] == 204
        assert (await w.call("GET", "/api/v1/me/rules", token=bob))[0] == 401
        assert (await w.call("GET", "/api/v1/me"))[0] == 401
        assert (await w.call("GET", "/api/v1/me", token="x" * 43))[0] == 401
    run(store, rules_parser, scenario)


def test_a_new_password_ends_the_users_open_sessions(store: SqliteStore,
                                                     rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        ann, bob = w.tokens["ann"], w.tokens["bob"]
        status, _, _ = await w.call("PUT", "/api/v1/tenants/acme/users/ann/password",
                                    as_="ada", json={"password": "a-brand-new-password"})
        assert status == 204
        assert (await w.call("GET", "/api/v1/me", token=ann))[0] == 401  # ended
        assert (await w.call("GET", "/api/v1/me", token=bob))[0] == 200  # not bob's
        await w.login("acme", "ann", "a-brand-new-password")
    run(store, rules_parser, scenario)


# -- who may touch what -----------------------------------------------------------------

def test_users_reach_only_their_own_and_admins_only_their_tenant(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        base = "/api/v1/tenants"
        not_found = {"error": {"field": "path", "reason": "not found"}}
        # ann (a user) cannot read or change bob's rules, nor tell bob from nobody.
        for path in (f"{base}/acme/users/bob/rules", f"{base}/acme/users/nobody/rules",
                     f"{base}/globex/users/cid/rules", f"{base}/nowhere/users/x/rules"):
            assert (await w.call("GET", path, as_="ann"))[:2] == (404, not_found)
            status, body, _ = await w.call("PUT", path, as_="ann", json=PORTION)
            assert (status, body) == (404, not_found)
        assert (await w.call("GET", f"{base}/acme/users", as_="ann"))[0] == 403
        assert (await w.call("GET", f"{base}/acme/users/ann", as_="ann"))[0] == 403
        assert (await store.get_portion("acme", "bob")).version == 0
        # ada (acme's admin) manages bob, not globex's cid.
        status, body, _ = await w.call("PUT", f"{base}/acme/users/bob/rules", as_="ada",
                                       json=PORTION)
        assert status == 200 and body["version"] == 1
        status, body, _ = await w.call("GET", f"{base}/acme/users", as_="ada")
        assert [u["user_id"] for u in body["users"]] == ["ada", "ann", "bob"]
        for method, path in [("GET", f"{base}/globex/users"), ("GET", f"{base}/globex/users/cid"),
                             ("PUT", f"{base}/globex/users/cid/rules"),
                             ("DELETE", f"{base}/globex/users/cid"),
                             ("GET", f"{base}/globex/users/ghost")]:
            status, body, _ = await w.call(method, path, as_="ada", json=PORTION)
            assert (status, body) == (404, not_found), (method, path)
        assert (await store.get_portion("globex", "cid")).version == 0
        assert await store.get_user("globex", "cid") is not None
        # The operator does all, in every tenant.
        op = OPERATOR_TOKEN
        status, body, _ = await w.call("GET", f"{base}/globex/users", token=op)
        assert [u["user_id"] for u in body["users"]] == ["cid"]
        status, body, _ = await w.call("PUT", f"{base}/globex/users/cid/rules", token=op,
                                       json={"version": 0, "rules": []})
        assert status == 200 and body["version"] == 1
        assert (await w.call("GET", "/api/v1/me/rules", token=op))[0] == 403
        assert (await w.call("GET", f"{base}/nowhere/users", token=op))[0] == 404
    run(store, rules_parser, scenario)


def test_admin_and_operator_manage_users(store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        users = "/api/v1/tenants/acme/users"
        status, body, _ = await w.call("POST", users, as_="ada", json={
            "user_id": "bob", "number": "2002"})
        assert status == 409
        status, body, _ = await w.call("PUT", f"{users}/bob", as_="ada", json={
            "display_name": "Robert", "timezone": "America/New_York"})
        assert status == 200 and body["display_name"] == "Robert"
        assert w.directory.user("acme", "bob").display_name == "Robert"  # type: ignore[union-attr]
        status, body, _ = await w.call("PUT", f"{users}/bob", as_="ada", json={"number": "2001"})
        assert (status, body["error"]["field"]) == (409, "number")
        new_password = "a-brand-new-password"
        status, _, _ = await w.call("PUT", f"{users}/bob/password", as_="ada",
                                    json={"password": new_password})
        assert status == 204
        await w.login("acme", "bob", new_password)
        assert (await w.call("DELETE", f"{users}/bob", as_="ada"))[0] == 204
        assert w.directory.user("acme", "bob") is None
        assert (await w.call("GET", f"{users}/bob", as_="ada"))[0] == 404
        assert (await w.call("GET", "/api/v1/me", as_="bob"))[0] == 401
    run(store, rules_parser, scenario)


def test_hot_desk_moves_a_binding_and_the_directory_follows(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        assert w.directory.by_number("acme", "2002")[0].bindings == ("1002",)  # type: ignore[index]
        status, body, _ = await w.call("PUT", "/api/v1/me/bindings", as_="ann",
                                       json={"extensions": ["1001", "1002"]})
        assert (status, body) == (200, {"extensions": ["1001", "1002"]})
        assert w.directory.user("acme", "ann").bindings == ("1001", "1002")  # type: ignore[union-attr]
        assert w.directory.user("acme", "bob").bindings == ()  # type: ignore[union-attr]
        assert (await store.get_user("acme", "bob")).bindings == ()  # type: ignore[union-attr]
        status, body, _ = await w.call("GET", "/api/v1/me/bindings", as_="bob")
        assert body == {"extensions": []}
        # The admin moves it back.
        status, _, _ = await w.call("PUT", "/api/v1/tenants/acme/users/bob/bindings",
                                    as_="ada", json={"extensions": ["1002"]})
        assert status == 200
        assert w.directory.user("acme", "ann").bindings == ("1001",)  # type: ignore[union-attr]
        assert w.directory.user("acme", "bob").bindings == ("1002",)  # type: ignore[union-attr]
        # Another tenant's extension, too many, twice the same: refused by field.
        for extensions, where in [(["3001"], "extensions[0]"),
                                  (["1001", "1001"], "extensions[1]"),
                                  (["1001"] * 9, "extensions")]:
            status, body, _ = await w.call("PUT", "/api/v1/me/bindings", as_="ann",
                                           json={"extensions": extensions})
            assert (status, body["error"]["field"]) == (422, where)
    run(store, rules_parser, scenario)


# -- rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "extension:10\n01", "extension:1001&1002", "extension:1001,t", "extension:1001)",
    "extension:${X}", "extension:3001",  # globex's extension
    "extension:3001@globex-internal", "globex-internal", "context:globex-internal",
    "voicemail:4001", "external:+15551234567", "external:+49123\n", "external:0049${X}"])
def test_a_refused_target_names_the_field_and_stores_nothing(
        store: SqliteStore, rules_parser: Rules, target: str) -> None:
    async def scenario(w: World) -> None:
        portion = {"version": 0, "rules": [
            {"name": "ok", "action": "forward", "target": "extension:1002"},
            {"name": "bad", "action": "forward", "target": target}]}
        status, body, _ = await w.call("PUT", "/api/v1/me/rules", as_="ann", json=portion)
        assert status == 422
        assert body["error"]["field"] == "rules[1].target" and body["error"]["reason"]
        assert (await store.get_portion("acme", "ann")).version == 0
        assert w.directory.by_number("acme", "2001")[1].version == 0  # type: ignore[index]
    run(store, rules_parser, scenario)


def test_rules_round_trip_and_the_directory_sees_each_write(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        status, body, _ = await w.call("GET", "/api/v1/me/rules", as_="ann")
        assert body == {"version": 0, "rules": [], "vip": [], "blocked": [], "saved": []}
        status, body, _ = await w.call("PUT", "/api/v1/me/rules", as_="ann", json=PORTION)
        # stored as the rule module normalises it (defaults written out)
        normal = personal.parse_portion(PORTION, extensions=None, external_prefixes=(),
                                        ring_time=20).to_json()
        assert status == 200 and body == {**normal, "version": 1}
        _, portion = w.directory.by_number("acme", "2001")  # type: ignore[misc]
        assert portion.version == 1 and portion.body["vip"] == ["0171*"]
        status, body, _ = await w.call("GET", "/api/v1/me/rules", as_="ann")
        assert body["version"] == 1 and body["rules"] == normal["rules"]
        # A stale version: 409 with the current one; nothing changes anywhere.
        status, body, _ = await w.call("PUT", "/api/v1/me/rules", as_="ann",
                                       json={"version": 0, "rules": []})
        assert status == 409
        assert body["error"]["field"] == "version" and body["error"]["current"] == 1
        assert w.directory.by_number("acme", "2001")[1].body["vip"] == ["0171*"]  # type: ignore[index]
        for bad, where in [({"rules": []}, "version"), ({"version": "1"}, "version"),
                           ({"version": True}, "version"),
                           ({"version": 1, "colour": "red"}, "colour")]:
            status, body, _ = await w.call("PUT", "/api/v1/me/rules", as_="ann", json=bad)
            assert (status, body["error"]["field"]) == (422, where)
    run(store, rules_parser, scenario)


def test_two_writes_of_the_same_version_one_wins(store: SqliteStore,
                                                 rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        answers = await asyncio.gather(*(
            w.call("PUT", "/api/v1/me/rules", as_="ann",
                   json={"version": 0, "vip": [f"0{n}*"]}) for n in (171, 172)))
        assert sorted(a[0] for a in answers) == [200, 409]
        winner = next(a[1] for a in answers if a[0] == 200)
        loser = next(a[1] for a in answers if a[0] == 409)
        assert loser["error"]["current"] == 1
        assert (await store.get_portion("acme", "ann")).body["vip"] == winner["vip"]
        assert w.directory.by_number("acme", "2001")[1].body["vip"] == winner["vip"]  # type: ignore[index]
    run(store, rules_parser, scenario)


# -- traces and replay ------------------------------------------------------------------

def _decision(rules: Rules, uniqueid: str, ani: str, at: float, user: str = "ann",
              bindings: str = "1001") -> TraceRecord:
    """A recorded decision whose outcome the rule module gave with no rules."""
    call = PersonalCall(ani=ani, number="2001", bindings=tuple(bindings.split("&")))
    import datetime as dt
    step = rules.evaluate(RuleSet(), call, dt.datetime.fromtimestamp(at, dt.UTC),
                          timezone="Europe/Berlin", holidays=(), ring_time=20)
    outcome = (f"route {step.target.kind}:{step.target.value}" if step.action == "route"
               else f"reject {step.cause}")
    return TraceRecord(tenant="acme", uniqueid=uniqueid, at=at, venue="acme-personal",
                       user_id=user, outcome=outcome, rule=step.trace.rule,
                       call={"ani": ani, "ani_name": "", "number": "2001",
                             "bindings": bindings})


def test_replay_lists_exactly_the_calls_whose_route_changes(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        t = w.clock.now - 3600
        await store.add_traces([
            _decision(rules_parser, "1800.1", "01711111", t),
            _decision(rules_parser, "1800.2", "03012345", t + 60),
            _decision(rules_parser, "1800.3", "01719999", t + 120),
            _decision(rules_parser, "1800.4", "01710000", t + 180, user="bob"),
            TraceRecord(tenant="acme", uniqueid="1800.5", at=t + 240, venue="acme-main",
                        outcome="route extension:1001", call={"ani": "01715555"}),
        ])
        candidate = {"version": 3, "rules": [
            {"name": "mobiles", "when": {"callers": ["0171*"]}, "action": "forward",
             "target": "extension:1003"}]}
        status, body, _ = await w.call("POST", "/api/v1/me/replay", as_="ann",
                                       json={"rules": candidate})
        assert status == 200, body
        assert body["replayed"] == 3
        assert [c["uniqueid"] for c in body["changed"]] == ["1800.1", "1800.3"]
        change = body["changed"][0]
        assert change["would"] == "route extension:1003" and change["at"] == t
        assert change["rule_would"] == "#1 mobiles" and change["was"] != change["would"]
        # The admin replays bob's; a refused candidate names the field under rules.
        status, body, _ = await w.call("POST", "/api/v1/tenants/acme/users/bob/replay",
                                       as_="ada", json={"rules": candidate})
        assert [c["uniqueid"] for c in body["changed"]] == ["1800.4"]
        bad = {"rules": [{"action": "forward", "target": "extension:3001"}]}
        status, body, _ = await w.call("POST", "/api/v1/me/replay", as_="ann",
                                       json={"rules": bad})
        assert (status, body["error"]["field"]) == (422, "rules.rules[0].target")
        assert (await w.call("POST", "/api/v1/tenants/acme/users/bob/replay", as_="ann",
                             json={"rules": candidate}))[0] == 404
    run(store, rules_parser, scenario)


def _venue_decision(uniqueid: str, local: str, *, tenant: str = "acme",
                    dnis: str = "100") -> TraceRecord:
    """A tenant venue's decision as recorded when the tenant has no rules (default)."""
    import datetime as dt
    from zoneinfo import ZoneInfo
    when = dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Berlin"))
    return TraceRecord(tenant=tenant, uniqueid=uniqueid, at=when.timestamp(),
                       venue=f"{tenant}-main", outcome="default vts",
                       rule="(no rule matched)",
                       why="default route (vts): (no rule matched)",
                       inputs={"time": local, "dnis": dnis, "digits": ""},
                       call={"ani": "03012345", "ani_name": "", "dnis": dnis})


TENANT_FILE = """
timezone = "Europe/Berlin"
external_prefixes = ["0049"]
operator = "1001"
[extensions]
"1001" = "PJSIP/ann"
"1002" = "PJSIP/bob"
[[rules]]
name = "evening"
hours = "18:00-24:00"
targets = ["1002"]
"""


def test_tenant_replay_lists_the_venue_calls_a_tenant_file_would_move(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        await store.add_traces([
            _venue_decision("2000.1", "2027-01-13T10:00"),
            _venue_decision("2000.2", "2027-01-13T19:30"),
            _decision(rules_parser, "2000.3", "01711111",
                      _venue_decision("x", "2027-01-13T20:00").at),  # ann's: not replayed
            _venue_decision("2000.4", "2027-01-13T21:00", tenant="globex"),
        ])
        path = "/api/v1/tenants/acme/replay"
        for who in ("ada", None):
            status, body, _ = await w.call("POST", path, as_=who,
                                           token=None if who else OPERATOR_TOKEN,
                                           json={"tenant_file": TENANT_FILE})
            assert status == 200, body
            assert body["replayed"] == 2
            assert body["changed"] == [{
                "uniqueid": "2000.2", "at": _venue_decision("x", "2027-01-13T19:30").at,
                "was": "default vts", "would": "route extension:1002",
                "rule_was": "(no rule matched)", "rule_would": "evening",
                "stateful": False, "treatment": ""}]
        # A bare rule list, checked against the running tenant; round robin is marked.
        status, body, _ = await w.call("POST", path, as_="ada", json={"rules": [
            {"name": "spread", "targets": ["1001", "1002"], "strategy": "round_robin"}]})
        assert status == 200, body
        assert [(c["uniqueid"], c["stateful"]) for c in body["changed"]] == [
            ("2000.1", True), ("2000.2", True)]
    run(store, rules_parser, scenario)


def test_tenant_replay_refuses_bad_candidates_and_strangers(
        store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        path = "/api/v1/tenants/acme/replay"
        bad_action = TENANT_FILE.replace('hours = "18:00-24:00"',
                                         'hours = "18:00-24:00"\naction = "forward"')
        refusals = [
            ({"tenant_file": bad_action}, "tenant_file.rules[0].action", "must be one of"),
            ({"tenant_file": "timezone = "}, "tenant_file", "not TOML"),
            ({"tenant_file": TENANT_FILE.replace('"1002"]', '"3001"]')},
             "tenant_file.rules", "3001"),
            ({"tenant_file": "colour = 1\n" + TENANT_FILE}, "tenant_file.colour", "unknown"),
            ({"tenant_file": 7}, "tenant_file", "TOML text"),
            ({"tenant_file": "holidays = 5\n" + TENANT_FILE}, "tenant_file.holidays",
             "list of ISO dates"),
            ({"rules": [{"targets": ["3001"]}]}, "rules", "3001"),  # globex's extension
            ({"rules": [{"targets": ["1001"], "strategy": "loud"}]}, "rules[0].strategy",
             "must be one of"),
            ({"rules": [], "tenant_file": TENANT_FILE}, "tenant_file", "exactly one"),
            ({}, "tenant_file", "exactly one"),
            ({"user": "ann"}, "user", "unknown key"),
        ]
        for body, key, reason in refusals:
            status, answer, _ = await w.call("POST", path, as_="ada", json=body)
            assert status == 422, (body, answer)
            assert answer["error"]["field"] == key, (body, answer)
            assert reason in answer["error"]["reason"], (body, answer)
        good = {"tenant_file": TENANT_FILE}
        status, answer, _ = await w.call("POST", path, as_="ann", json=good)
        assert (status, answer["error"]["field"]) == (403, "admin")
        assert (await w.call("POST", path, as_="cid", json=good))[0] == 404
        assert (await w.call("POST", "/api/v1/tenants/globex/replay", as_="ada",
                             json=good))[0] == 404
        assert (await w.call("POST", "/api/v1/tenants/nope/replay", token=OPERATOR_TOKEN,
                             json=good))[0] == 404
        assert (await w.call("POST", path, json=good))[0] == 401
    run(store, rules_parser, scenario)


def test_call_traces_are_shown_to_whom_they_belong(store: SqliteStore,
                                                   rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        t = w.clock.now
        await store.add_traces([
            _decision(rules_parser, "1900.1", "0301", t),
            _decision(rules_parser, "1900.2", "0302", t + 1, user="bob"),
            TraceRecord(tenant="globex", uniqueid="1900.3", at=t + 2, venue="globex-personal",
                        user_id="cid", outcome="reject busy")])
        status, body, _ = await w.call("GET", "/api/v1/me/calls?limit=10", as_="ann")
        assert [c["uniqueid"] for c in body["calls"]] == ["1900.1"]
        assert (await w.call("GET", "/api/v1/me/calls?limit=0", as_="ann"))[0] == 422
        status, body, _ = await w.call("GET", "/api/v1/calls/1900.1", as_="ann")
        assert status == 200 and body["decisions"][0]["call"]["ani"] == "0301"
        for uniqueid in ("1900.2", "1900.3", "nope"):
            assert (await w.call("GET", f"/api/v1/calls/{uniqueid}", as_="ann"))[0] == 404
        assert (await w.call("GET", "/api/v1/calls/1900.2", as_="ada"))[0] == 200
        assert (await w.call("GET", "/api/v1/calls/1900.3", as_="ada"))[0] == 404
        status, body, _ = await w.call("GET", "/api/v1/calls/1900.3", token=OPERATOR_TOKEN)
        assert (status, body["error"]["field"]) == (400, "tenant")
        status, body, _ = await w.call("GET", "/api/v1/calls/1900.3?tenant=globex",
                                       token=OPERATOR_TOKEN)
        assert status == 200 and body["decisions"][0]["outcome"] == "reject busy"
    run(store, rules_parser, scenario)


# -- input --------------------------------------------------------------------------------

def test_bad_input_is_a_4xx_naming_the_field(store: SqliteStore, rules_parser: Rules) -> None:
    async def scenario(w: World) -> None:
        users = "/api/v1/tenants/acme/users"

        async def create(**fields: Any) -> tuple[int, str]:
            body = {"user_id": "dan", "number": "2003", **fields}
            status, answer, _ = await w.call("POST", users, as_="ada", json=body)
            return status, answer["error"]["field"] if status >= 400 else ""
        assert await create(display_name="Dan\nEvil") == (422, "display_name")
        assert await create(user_id="Dan") == (422, "user_id")
        assert await create(number="4001") == (422, "number")
        assert await create(bindings=["3001"]) == (422, "bindings[0]")
        assert await create(timezone="Mars/Olympus") == (422, "timezone")
        assert await create(timezone="../../etc/passwd") == (422, "timezone")
        assert await create(password="short") == (422, "password")
        assert await create(admin="yes") == (422, "admin")
        assert await create(shoe_size=42) == (422, "shoe_size")
        assert await create(number="2003") == (409, "user_id")  # ada has 2003
        for raw, status in [(b"{", 400), (b"[1]", 400), (b"\xff", 400), (b"NaN", 400),
                            (b"[" * 5000, 400), (b" " * 70_000, 413)]:
            answer = await w.call("PUT", "/api/v1/me/rules", as_="ann", data=raw)
            assert answer[0] == status and answer[1]["error"]["field"] == "body", raw[:5]
        status, body, _ = await w.call("GET", "/api/v1/nothing/here")
        assert (status, body["error"]["field"]) == (404, "path")
        assert (await w.call("DELETE", "/api/v1/me/rules", as_="ann"))[0] == 405
        status, _, _ = await w.call("POST", "/api/v1/login", json={
            "tenant": "acme", "user": "ann\r\nX", "password": "x"})
        assert status == 422
    run(store, rules_parser, scenario)


class BrokenStore(SqliteStore):
    """The real store whose portion reads fail as no store should."""

    async def get_portion(self, tenant: str, user_id: str) -> Any:
        raise RuntimeError("disk on fire")


def test_an_unexpected_failure_is_a_logged_generic_500(
        rules_parser: Rules, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        with caplog.at_level(logging.ERROR, logger="ami_bridge.api.app"):
            status, body, _ = await w.call("GET", "/api/v1/me/rules", as_="ann")
        assert (status, body) == (500, {"error": {"field": "", "reason": "internal error"}})
        assert "disk on fire" in caplog.text
    run(BrokenStore(tmp_path / "personal.sqlite3"), rules_parser, scenario)


# -- the document -------------------------------------------------------------------------

def test_every_route_is_documented_and_every_documented_path_exists(
        store: SqliteStore, rules_parser: Rules) -> None:
    app = build_app(store, Directory(), Clock(), rules_parser)
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None}
    documented = {(method, path) for path, methods in document()["paths"].items()
                  for method in methods}
    assert len(routes) > 20
    assert routes == documented

    async def scenario(w: World) -> None:
        status, body, _ = await w.call("GET", "/api/v1/openapi.json")
        assert status == 200 and body["openapi"].startswith("3.1")
    run(store, rules_parser, scenario, login=False)


def test_docs_api_md_is_the_rendered_document() -> None:
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == markdown()


def test_the_replay_core_does_no_io() -> None:
    tree = ast.parse((ROOT / "ami_bridge/personal/replay.py").read_text())
    imported = {n.module.split(".")[0] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
    assert not imported & {"asyncio", "socket", "logging", "subprocess", "threading"}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serve_speaks_tls_with_a_certificate(store: SqliteStore, rules_parser: Rules,
                                             tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)

    async def main() -> None:
        app = build_app(store, Directory(), Clock(), rules_parser)
        runner = await serve(app, ApiConfig(host="127.0.0.1", port=0, tls_cert=cert,
                                            tls_key=key))
        port = runner.addresses[0][1]
        try:
            trusted = ssl.create_default_context(cafile=str(cert))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"https://127.0.0.1:{port}/api/v1/openapi.json",
                                    ssl=trusted) as answer:
                    assert answer.status == 200
                with pytest.raises(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/openapi.json"):
                        pass
        finally:
            await runner.cleanup()
    asyncio.run(main())
