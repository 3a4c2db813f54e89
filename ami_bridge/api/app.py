"""The personal router's HTTP API (aiohttp): users, their rules, bindings and traces.

`make_app` builds the application over a `Store`, the in-memory `Directory` the
intermediary reads at call time, and the tenants as the running config has them;
`serve` starts it on `[api] listen` (HTTPS when a certificate is configured). Every
route is in the OpenAPI document (`ami_bridge.api.openapi`, docs/api.md). Rules of
access: a user reads and writes only his or her own portion and bindings; a tenant's
admin manages that tenant's users; the operator (bearer token from `[api]
operator_token_file`) manages every tenant's. Another tenant's resources, and another
user's for a non-admin, answer 404 whether they exist or not; a lacking role on the own
tenant's collections answers 403. Every write goes to the store first, then into the
directory, so the next call sees it. Bad input is a 4xx naming the field
(`ami_bridge.api.inputs`); a store that cannot be reached (PostgreSQL down) is a 503
naming the store, nothing changed (`STORE_DOWN`); anything unexpected is logged with its
traceback and answered with a generic 500. Password hashing runs in a worker thread:
the event loop also routes calls.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import argon2
from aiohttp import web

from ami_bridge.api import inputs
from ami_bridge.api.auth import OPERATOR, LoginThrottle, Principal, bearer, is_operator, new_token
from ami_bridge.api.auth import token_hash as hash_token
from ami_bridge.api.inputs import ApiError, invalid
from ami_bridge.config import DEFAULT_ROUTER_TIMEOUT
from ami_bridge.namespace import TENANT_NAME_RE
from ami_bridge.personal import replay as replay_mod
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import (
    USER_ID_RE,
    Conflict,
    Exists,
    NotFound,
    Portion,
    Session,
    Store,
    StoreError,
    TraceRecord,
    User,
)
from ami_bridge.personal.settings import ApiConfig
from ami_bridge.tenant_config import (
    DEFAULT_REDIRECT_LIMIT,
    DEFAULT_RING_TIME,
    TenantConfig,
    parse_tenant,
)
from ami_bridge.tenants import personal
from ami_bridge.tenants.routing import RoutingProtocol, parse_protocol
from ami_bridge.validation import ConfigError
from ami_bridge.web import StaticFiles

if TYPE_CHECKING:
    from ami_bridge.personal.pops import PopHub

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
DEFAULT_CALLS = 50  # GET /me/calls without ?limit
MAX_CALLS = 500
MAX_REPLAY = 1000  # recorded decisions one replay evaluates (newest first)
MAX_CALL_DECISIONS = 100  # decisions of one call (re-entries are bounded far lower)
MAX_REASON = 300  # characters of a parser's message in a 422 (it quotes the bad value)
PORTION_KEYS = ("rules", "vip", "blocked", "saved")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ParsePortion = Callable[..., personal.RuleSet]

# One body for every refusal that must not tell whether the thing exists.
NOT_FOUND = ApiError(404, "path", "not found")
UNAUTHORIZED = ApiError(401, "token", "missing, unknown or expired bearer token",
                        headers={"WWW-Authenticate": 'Bearer realm="ami-bridge"'})
BAD_LOGIN = ApiError(401, "password", "unknown user or wrong password")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def user_json(user: User) -> dict[str, Any]:
    return {"tenant": user.tenant, "user_id": user.user_id, "number": user.number,
            "display_name": user.display_name, "timezone": user.timezone,
            "bindings": list(user.bindings), "admin": user.admin}


def portion_json(portion: Portion) -> dict[str, Any]:
    body = {key: list(portion.body.get(key, [])) for key in PORTION_KEYS}
    return {"version": portion.version, **body}


def trace_json(record: TraceRecord) -> dict[str, Any]:
    return {"tenant": record.tenant, "uniqueid": record.uniqueid, "at": record.at,
            "venue": record.venue, "user_id": record.user_id, "request": record.request,
            "previous": record.previous, "outcome": record.outcome, "rule": record.rule,
            "why": record.why, "inputs": dict(record.inputs), "call": dict(record.call)}


STORE_DOWN = ("the personal store (its database) cannot be reached: nothing was read or "
              "changed; try again when it is back (calls are still routed)")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals as `{"error": {...}}`; anything unexpected as a logged, generic 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    except StoreError as exc:  # Conflict, NotFound, Exists are answered by the handlers
        log.warning("API %s %s: %s", request.method, request.path, exc)
        return web.json_response({"error": {"field": "store", "reason": STORE_DOWN}},
                                 status=503, headers={"Retry-After": "1"})
    except web.HTTPException as exc:  # aiohttp's own: unknown path, method, body size
        if exc.status < 400:
            raise
        field = "body" if exc.status == 413 else "path"
        return web.json_response({"error": {"field": field, "reason": exc.reason}},
                                 status=exc.status, headers=_allow(exc))
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return web.json_response({"error": {"field": "", "reason": "internal error"}},
                                 status=500)


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


class _Api:
    def __init__(self, *, store: Store, directory: Directory,
                 tenants: Callable[[], Mapping[str, TenantConfig]], config: ApiConfig,
                 clock: Callable[[], float], parse_portion: ParsePortion,
                 evaluate: replay_mod.Evaluate, hasher: argon2.PasswordHasher) -> None:
        self.store = store
        self.directory = directory
        self.tenants = tenants
        self.config = config
        self.clock = clock
        self.parse_portion = parse_portion
        self.evaluate = evaluate
        self.hasher = hasher
        self.pops: PopHub | None = None  # live call pops: a new password closes sockets
        self.throttle = LoginThrottle()
        self._dummy_hash: str | None = None

    # -- who is asking ---------------------------------------------------------------
    async def principal(self, request: web.Request) -> Principal:
        token = bearer(request.headers.get("Authorization"))
        if token is None:
            raise UNAUTHORIZED
        if is_operator(token, self.config.operator_token):
            return OPERATOR
        digest = hash_token(token)
        session = await self.store.get_session(digest, self.clock())
        if session is None:
            raise UNAUTHORIZED
        user = await self.store.get_user(session.tenant, session.user_id)
        if user is None:  # deleted since the login
            raise UNAUTHORIZED
        return Principal(tenant=user.tenant, user_id=user.user_id, admin=user.admin,
                         token_hash=digest)

    async def me(self, request: web.Request) -> tuple[Principal, User, TenantConfig]:
        """The calling user, with the tenant's config; the operator has no /me."""
        who = await self.principal(request)
        if who.operator:
            raise ApiError(403, "token", "the operator has no personal resources; use "
                           f"{PREFIX}/tenants/{{tenant}}/users/{{user_id}}/...")
        user = await self.store.get_user(who.tenant, who.user_id)
        tenant = self.tenants().get(who.tenant)
        if user is None or tenant is None:
            raise NOT_FOUND
        return who, user, tenant

    async def managed(self, request: web.Request, *,
                      collection: bool) -> tuple[Principal, TenantConfig, User | None]:
        """For /tenants/{tenant}/users[/{user_id}]: the caller must be the operator or an
        admin of that tenant; anything else of another tenant is a plain 404."""
        who = await self.principal(request)
        name = request.match_info["tenant"]
        tenant = self.tenants().get(name) if TENANT_NAME_RE.fullmatch(name) else None
        if tenant is None or (not who.operator and who.tenant != name):
            raise NOT_FOUND
        user_id = request.match_info.get("user_id")
        if not who.operator and not who.admin:
            if collection or user_id != who.user_id:
                if collection:
                    raise ApiError(403, "admin", "only the tenant's admins manage its users")
                raise NOT_FOUND
            raise ApiError(403, "admin", f"only the tenant's admins use this path; "
                           f"use {PREFIX}/me/...")
        if user_id is None:
            return who, tenant, None
        user = (await self.store.get_user(name, user_id)
                if USER_ID_RE.fullmatch(user_id) else None)
        if user is None:
            raise NOT_FOUND
        return who, tenant, user

    # -- login, refresh, logout ----------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"tenant", "user", "password"})
        tenant = inputs.text(body, "tenant", pattern=TENANT_NAME_RE, what="a tenant name")
        user_id = inputs.user_id(body, "user")
        password = inputs.text(body, "password", max_len=inputs.MAX_PASSWORD)
        now = self.clock()
        keys = (("user", tenant, user_id), ("address", request.remote or ""))
        wait = max(self.throttle.retry_after(now, key) for key in keys)
        if wait > 0:
            raise ApiError(429, "user", "too many failed logins; try again later",
                           headers={"Retry-After": str(int(wait) + 1)})
        stored = (await self.store.password_hash(tenant, user_id)
                  if tenant in self.tenants() else None)
        # An unknown user costs one verify too, so the time taken does not tell.
        ok = await self._verify(stored or await self._dummy(), password) and stored is not None
        user = await self.store.get_user(tenant, user_id) if ok else None
        if user is None or stored is None:
            for key in keys:
                self.throttle.failed(now, key)
            raise BAD_LOGIN
        self.throttle.succeeded(keys[0])
        if self.hasher.check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            await self.store.set_password_hash(tenant, user_id, new_hash)
        await self.store.purge_sessions(now)
        return _json(await self._session(user, now))

    async def refresh(self, request: web.Request) -> web.Response:
        who = await self._session_principal(request)
        user = await self.store.get_user(who.tenant, who.user_id)
        if user is None:
            raise UNAUTHORIZED
        answer = await self._session(user, self.clock())
        await self.store.delete_session(who.token_hash)
        return _json(answer)

    async def logout(self, request: web.Request) -> web.Response:
        who = await self._session_principal(request)
        await self.store.delete_session(who.token_hash)
        if self.pops is not None:  # the workstation sockets of that session go with it
            self.pops.end_session(who.token_hash)
        return web.Response(status=204)

    async def _session_principal(self, request: web.Request) -> Principal:
        who = await self.principal(request)
        if who.operator:
            raise ApiError(403, "token", "the operator token is not a session; it is "
                           "changed in [api] operator_token_file")
        return who

    async def _session(self, user: User, now: float) -> dict[str, Any]:
        token, digest = new_token()
        expires = now + self.config.token_ttl
        await self.store.add_session(Session(digest, user.tenant, user.user_id, expires))
        return {"token": token, "expires_at": expires, "user": user_json(user)}

    async def _verify(self, stored: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self.hasher.hash, "not a password")
        return self._dummy_hash

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    # -- me -------------------------------------------------------------------------------
    async def get_me(self, request: web.Request) -> web.Response:
        who = await self.principal(request)
        if who.operator:
            return _json({"operator": True, "user": None})
        _, user, _ = await self.me(request)
        return _json({"operator": False, "user": user_json(user)})

    async def get_my_rules(self, request: web.Request) -> web.Response:
        _, user, _ = await self.me(request)
        return _json(portion_json(await self.store.get_portion(user.tenant, user.user_id)))

    async def put_my_rules(self, request: web.Request) -> web.Response:
        _, user, tenant = await self.me(request)
        return await self._put_rules(request, user, tenant)

    async def get_my_bindings(self, request: web.Request) -> web.Response:
        _, user, _ = await self.me(request)
        return _json({"extensions": list(user.bindings)})

    async def put_my_bindings(self, request: web.Request) -> web.Response:
        _, user, tenant = await self.me(request)
        return await self._put_bindings(request, user, tenant)

    async def my_calls(self, request: web.Request) -> web.Response:
        _, user, _ = await self.me(request)
        limit = _limit(request)
        records = await self.store.traces(user.tenant, user_id=user.user_id, limit=limit)
        return _json({"calls": [trace_json(r) for r in records]})

    async def my_replay(self, request: web.Request) -> web.Response:
        _, user, tenant = await self.me(request)
        return await self._replay(request, user, tenant)

    async def call_trace(self, request: web.Request) -> web.Response:
        who = await self.principal(request)
        uniqueid = request.match_info["uniqueid"]
        if not inputs.UNIQUEID_RE.fullmatch(uniqueid):
            raise NOT_FOUND
        if who.operator:
            name = request.query.get("tenant", "")
            if not name:
                raise ApiError(400, "tenant", "the operator names the call's tenant: "
                               "?tenant=NAME")
            if name not in self.tenants():
                raise NOT_FOUND
        else:
            name = who.tenant
        records = await self.store.traces(name, uniqueid=uniqueid, limit=MAX_CALL_DECISIONS)
        if not (who.operator or who.admin):
            records = [r for r in records if r.user_id == who.user_id]
        if not records:
            raise NOT_FOUND
        records.sort(key=lambda r: (r.request, r.at))
        return _json({"tenant": name, "uniqueid": uniqueid,
                      "decisions": [trace_json(r) for r in records]})

    # -- a tenant's users (admin, operator) -----------------------------------------------
    async def list_users(self, request: web.Request) -> web.Response:
        _, tenant, _ = await self.managed(request, collection=True)
        users = await self.store.list_users(tenant.name)
        return _json({"users": [user_json(u) for u in users]})

    async def create_user(self, request: web.Request) -> web.Response:
        _, tenant, _ = await self.managed(request, collection=True)
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"user_id", "number", "display_name", "timezone", "admin",
                                "password", "bindings"})
        numbers = tenant.personal.numbers if tenant.personal else {}
        user = User(tenant=tenant.name, user_id=inputs.user_id(body),
                    number=inputs.number(body, numbers),
                    display_name=inputs.display_name(body), timezone=inputs.timezone(body),
                    admin=inputs.boolean(body, "admin", False))
        bindings = inputs.extensions(body.get("bindings", [numbers[user.number]]),
                                     tenant.extensions, "bindings")
        password_hash = await self._hash(inputs.password(body)) if "password" in body else None
        try:
            await self.store.create_user(user, password_hash)
        except Exists as exc:
            raise ApiError(409, "user_id", f"{exc}") from None
        self.directory.put_user(user)
        await self._bind(user, bindings)
        created = await self.store.get_user(user.tenant, user.user_id)
        return _json(user_json(created or user), status=201)

    async def get_user(self, request: web.Request) -> web.Response:
        _, _, user = await self.managed(request, collection=False)
        assert user is not None
        return _json(user_json(user))

    async def put_user(self, request: web.Request) -> web.Response:
        _, tenant, user = await self.managed(request, collection=False)
        assert user is not None
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"number", "display_name", "timezone", "admin"})
        numbers = tenant.personal.numbers if tenant.personal else {}
        changed = User(
            tenant=user.tenant, user_id=user.user_id, bindings=user.bindings,
            number=inputs.number(body, numbers) if "number" in body else user.number,
            display_name=inputs.display_name(body, user.display_name),
            timezone=inputs.timezone(body, user.timezone),
            admin=inputs.boolean(body, "admin", user.admin))
        try:
            await self.store.update_user(changed)
        except Exists as exc:
            raise ApiError(409, "number", f"{exc}") from None
        except NotFound:
            raise NOT_FOUND from None
        now = await self.store.get_user(user.tenant, user.user_id) or changed
        self.directory.put_user(now)
        return _json(user_json(now))

    async def delete_user(self, request: web.Request) -> web.Response:
        _, _, user = await self.managed(request, collection=False)
        assert user is not None
        try:
            await self.store.delete_user(user.tenant, user.user_id)
        except NotFound:
            raise NOT_FOUND from None
        self.directory.drop_user(user.tenant, user.user_id)
        return web.Response(status=204)

    async def get_user_rules(self, request: web.Request) -> web.Response:
        _, _, user = await self.managed(request, collection=False)
        assert user is not None
        return _json(portion_json(await self.store.get_portion(user.tenant, user.user_id)))

    async def put_user_rules(self, request: web.Request) -> web.Response:
        _, tenant, user = await self.managed(request, collection=False)
        assert user is not None
        return await self._put_rules(request, user, tenant)

    async def put_user_bindings(self, request: web.Request) -> web.Response:
        _, tenant, user = await self.managed(request, collection=False)
        assert user is not None
        return await self._put_bindings(request, user, tenant)

    async def put_user_password(self, request: web.Request) -> web.Response:
        _, _, user = await self.managed(request, collection=False)
        assert user is not None
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"password"})
        password_hash = await self._hash(inputs.password(body))
        try:  # the store ends the user's sessions with it
            await self.store.set_password_hash(user.tenant, user.user_id, password_hash)
        except NotFound:
            raise NOT_FOUND from None
        if self.pops is not None:
            self.pops.end_user(user.tenant, user.user_id)
        return web.Response(status=204)

    async def user_replay(self, request: web.Request) -> web.Response:
        _, tenant, user = await self.managed(request, collection=False)
        assert user is not None
        return await self._replay(request, user, tenant)

    # -- shared by /me and the admin paths -------------------------------------------------
    def _rule_set(self, raw: Mapping[str, Any], tenant: TenantConfig,
                  where: str = "") -> personal.RuleSet:
        ring_time = tenant.personal.ring_time if tenant.personal else DEFAULT_RING_TIME
        try:
            return self.parse_portion(dict(raw), extensions=tuple(tenant.extensions),
                                      external_prefixes=tenant.external_prefixes,
                                      ring_time=ring_time)
        except personal.PortionError as exc:
            raise invalid(f"{where}{exc.field}", exc.reason) from None

    async def _put_rules(self, request: web.Request, user: User,
                         tenant: TenantConfig) -> web.Response:
        body = inputs.body_object(await request.read())
        version = inputs.integer(body, "version", minimum=0, maximum=2**62)
        rules = self._rule_set({k: v for k, v in body.items() if k != "version"}, tenant)
        try:
            portion = await self.store.put_portion(user.tenant, user.user_id, rules.to_json(),
                                                   expected_version=version)
        except Conflict as exc:
            raise ApiError(409, "version", f"the rules changed since version {version} was "
                           f"read; read them again (current version {exc.current})",
                           extra={"current": exc.current}) from None
        except NotFound:
            raise NOT_FOUND from None
        self.directory.put_portion(portion)
        return _json(portion_json(portion))

    async def _put_bindings(self, request: web.Request, user: User,
                            tenant: TenantConfig) -> web.Response:
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"extensions"})
        if "extensions" not in body:
            raise invalid("extensions", "required")
        bindings = inputs.extensions(body["extensions"], tenant.extensions)
        await self._bind(user, bindings)
        return _json({"extensions": list(bindings)})

    async def _bind(self, user: User, bindings: tuple[str, ...]) -> None:
        try:
            changed = await self.store.set_bindings(user.tenant, user.user_id, bindings)
        except NotFound:
            raise NOT_FOUND from None
        for each in changed:  # this user and those the extensions were taken from
            self.directory.put_user(each)

    async def _replay(self, request: web.Request, user: User,
                      tenant: TenantConfig) -> web.Response:
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"rules"})
        candidate = body.get("rules")
        if not isinstance(candidate, dict):
            raise invalid("rules", "must be a portion object: {\"rules\": [...], ...}")
        rules = self._rule_set({k: v for k, v in candidate.items() if k != "version"},
                               tenant, where="rules.")
        records = await self.store.traces(user.tenant, user_id=user.user_id, limit=MAX_REPLAY)
        ring_time = tenant.personal.ring_time if tenant.personal else DEFAULT_RING_TIME
        result = replay_mod.replay(records, rules, user_id=user.user_id,
                                   timezone=user.timezone or tenant.timezone,
                                   holidays=tenant.holidays, ring_time=ring_time,
                                   evaluate=self.evaluate)
        return _json({"changed": [c.to_json() for c in result.changed],
                      "replayed": result.replayed})

    async def tenant_replay(self, request: web.Request) -> web.Response:
        """POST /tenants/{tenant}/replay: the tenant venues' recorded decisions against a
        candidate tenant file (TOML text) or rule list, before it is applied."""
        try:
            _, tenant, _ = await self.managed(request, collection=True)
        except ApiError as exc:
            if exc.status != 403:
                raise
            raise ApiError(403, "admin", "only the tenant's admins replay its calls") from None
        body = inputs.body_object(await request.read())
        inputs.only_keys(body, {"tenant_file", "rules"})
        if ("tenant_file" in body) == ("rules" in body):
            raise invalid("tenant_file", "give exactly one of tenant_file (the TOML text of "
                          "a tenants.d/NAME/tenant.toml) and rules (a list of tenant rules)")
        protocol = _candidate_protocol(body, tenant)
        # user_id "": the tenant venues' decisions only (a user's go through `_replay`).
        records = await self.store.traces(tenant.name, user_id="", limit=MAX_REPLAY)
        # Up to MAX_REPLAY decisions through a rule list bounded only by the body size:
        # off the event loop, which also routes calls.
        result = await asyncio.to_thread(replay_mod.replay_tenant, records, protocol)
        return _json({"changed": [c.to_json() for c in result.changed],
                      "replayed": result.replayed})

    async def openapi(self, request: web.Request) -> web.Response:
        # Imported here so `python -m ami_bridge.api.openapi` finds it not yet loaded.
        from ami_bridge.api.openapi import document

        return _json(document())


class _CandidateError(ConfigError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _candidate_protocol(body: Mapping[str, Any], tenant: TenantConfig) -> RoutingProtocol:
    """The candidate as the bridge's own tenant parser accepts it (errors: 422 naming the
    key under `tenant_file.` or `rules`), as the routing protocol the VTS would run.
    A rule list is checked against the running tenant's namespace, timezone and
    holidays; a tenant file against its own. Ownership of contexts and endpoints, which
    needs every tenant and the operator's grants, is `ami-bridge check`'s, not this."""
    if "tenant_file" in body:
        where = "tenant_file."
        text = body["tenant_file"]
        if not isinstance(text, str):
            raise invalid("tenant_file", "must be the TOML text of a tenant file")
        try:
            raw: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise invalid("tenant_file", f"not TOML: {exc}"[:MAX_REASON]) from None
    else:
        where = ""
        raw = {"timezone": tenant.timezone, "holidays": list(tenant.holidays),
               "targets": sorted(tenant.targets), "queues": sorted(tenant.queues),
               "external_prefixes": list(tenant.external_prefixes), "rules": body["rules"]}

    def fail(key: str, message: str) -> ConfigError:
        return _CandidateError(key, message)

    holidays = raw.get("holidays", [])
    if not isinstance(holidays, list):  # parse_protocol iterates it unchecked
        raise invalid(f"{where}holidays", f"must be a list of ISO dates, got {holidays!r}"
                      [:MAX_REASON])
    # A candidate is only parsed, never run: the bridge's default router timeout and
    # redirect limit stand in for [bridge]'s (neither changes what a rule decides).
    try:
        parsed, _ = parse_tenant(tenant.name, raw, fail=fail, prefix="",
                                 router_timeout=DEFAULT_ROUTER_TIMEOUT,
                                 redirect_limit=DEFAULT_REDIRECT_LIMIT)
    except _CandidateError as exc:
        raise invalid(f"{where}{exc.key}", exc.message[:MAX_REASON]) from None
    except (TypeError, AttributeError) as exc:
        # A shape the parser does not check for: the client's input, not a server fault.
        log.warning("tenant replay: the tenant parser failed on a candidate: %r", exc)
        raise invalid(where.rstrip(".") or "rules", "not a tenant file the parser can "
                      f"read: {exc}"[:MAX_REASON]) from None
    # parse_tenant accepted these very rules, timezone and holidays: no error left.
    return parse_protocol(list(parsed.rules), timezone=parsed.timezone,
                          holidays=list(parsed.holidays))


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_CALLS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_CALLS:
        raise invalid("limit", f"must be an integer 1..{MAX_CALLS}, got {raw!r}"[:200])
    return int(raw)


async def _no_pops(request: web.Request) -> web.StreamResponse:
    raise ApiError(404, "path", "this bridge serves no live call pops")


def make_app(*, store: Store, directory: Directory,
             tenants: Callable[[], Mapping[str, TenantConfig]], config: ApiConfig,
             clock: Callable[[], float] = time.time,
             parse_portion: ParsePortion = personal.parse_portion,
             evaluate: replay_mod.Evaluate = personal.evaluate,
             hasher: argon2.PasswordHasher | None = None,
             pops: PopHub | None = None) -> web.Application:
    """The API over these; `parse_portion`, `evaluate` and `hasher` are for tests.
    `pops` serves the live call pops' WebSocket (without it the path answers 404)."""
    api = _Api(store=store, directory=directory, tenants=tenants, config=config, clock=clock,
               parse_portion=parse_portion, evaluate=evaluate,
               hasher=hasher or argon2.PasswordHasher())
    api.pops = pops
    app = web.Application(middlewares=[_errors], client_max_size=inputs.MAX_BODY)
    page = StaticFiles.load()  # the workstation page (docs/workstation.md): read once, here
    app.router.add_route("GET", "/", page.index)
    app.router.add_route("GET", "/static/{name}", page.static)
    users = f"{PREFIX}/tenants/{{tenant}}/users"
    user = f"{users}/{{user_id}}"
    routes: list[tuple[str, str, Handler]] = [
        ("POST", f"{PREFIX}/login", api.login),
        ("POST", f"{PREFIX}/refresh", api.refresh),
        ("POST", f"{PREFIX}/logout", api.logout),
        ("GET", f"{PREFIX}/me", api.get_me),
        ("GET", f"{PREFIX}/me/rules", api.get_my_rules),
        ("PUT", f"{PREFIX}/me/rules", api.put_my_rules),
        ("GET", f"{PREFIX}/me/bindings", api.get_my_bindings),
        ("PUT", f"{PREFIX}/me/bindings", api.put_my_bindings),
        ("GET", f"{PREFIX}/me/calls", api.my_calls),
        ("POST", f"{PREFIX}/me/replay", api.my_replay),
        ("GET", f"{PREFIX}/calls/{{uniqueid}}", api.call_trace),
        ("GET", users, api.list_users),
        ("POST", users, api.create_user),
        ("GET", user, api.get_user),
        ("PUT", user, api.put_user),
        ("DELETE", user, api.delete_user),
        ("GET", f"{user}/rules", api.get_user_rules),
        ("PUT", f"{user}/rules", api.put_user_rules),
        ("PUT", f"{user}/bindings", api.put_user_bindings),
        ("PUT", f"{user}/password", api.put_user_password),
        ("POST", f"{user}/replay", api.user_replay),
        ("POST", f"{PREFIX}/tenants/{{tenant}}/replay", api.tenant_replay),
        ("GET", f"{PREFIX}/openapi.json", api.openapi),
        ("GET", f"{PREFIX}/ws", pops.handle if pops is not None else _no_pops),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    if pops is not None:
        app.on_shutdown.append(lambda _: pops.close())  # open sockets would hold it up
    return app


async def serve(app: web.Application, config: ApiConfig) -> web.AppRunner:
    """Listen on config.host:config.port (HTTPS with tls_cert and tls_key); the caller
    cleans the returned runner up."""
    context: ssl.SSLContext | None = None
    if config.tls_cert is not None and config.tls_key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(config.tls_cert, config.tls_key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("API listening on %s (%s)", runner.addresses,
             "https" if context is not None else "http")
    return runner
