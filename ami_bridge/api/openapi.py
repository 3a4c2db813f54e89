"""The API's OpenAPI 3.1 document, written by hand as data, and its Markdown rendering.

`document()` is what `GET /api/v1/openapi.json` serves; a test walks the app's router
and holds every route to an entry here and every entry to a route. `markdown()` renders
the same document as docs/api.md (`python -m ami_bridge.api.openapi --markdown`; a test
holds the file to it), so the page cannot drift from the server. Pure data: no I/O
besides the command's print.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ami_bridge.personal.model import MAX_BINDINGS, MAX_DISPLAY_NAME

TITLE = "ami-bridge personal router API"
VERSION = "1"

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_NUM = {"type": "number"}
_STRINGS = {"type": "array", "items": _STR}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _ok(description: str, schema: str | None = None, status: str = "200") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": _ref(schema)}}
    return {status: answer}


def _errors(codes: tuple[str, ...], notes: dict[str, str]) -> dict[str, Any]:
    reasons = {
        "400": "malformed body: not JSON, or not a JSON object",
        "401": "no valid bearer token",
        "403": "the caller lacks the role (a non-admin on a tenant's collection)",
        "404": "no such resource, or one of another tenant or user (never telling which)",
        "409": "conflict: a stale version (`current` says the current one) or an "
               "existing user id or number",
        "413": "body larger than 64 KiB",
        "422": "a field refused: `field` names it, `reason` says why",
        "429": "too many failed logins; `Retry-After` says when to try again",
        **notes,
    }
    return {code: {"description": reasons[code],
                   "content": {"application/json": {"schema": _ref("Error")}}}
            for code in codes}


def _op(summary: str, description: str, *, ok: dict[str, Any], errors: tuple[str, ...],
        body: str | None = None, public: bool = False,
        parameters: list[dict[str, Any]] | None = None,
        notes: dict[str, str] | None = None) -> dict[str, Any]:
    """One operation; `notes` replace the usual description of an error status."""
    operation: dict[str, Any] = {"summary": summary, "description": description,
                                 "responses": {**ok, **_errors(errors, notes or {})}}
    if body is not None:
        operation["requestBody"] = _body(body)
    if public:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _STR,
            "description": description}


_TENANT = _path_param("tenant", "the tenant's name")
_USER = _path_param("user_id", "the user's login name")
_AUTH = ("401", "404")
_NOT_A_SESSION = {"403": "the operator's token is not a session"}
_NOT_OPERATOR = {"403": "the operator has no personal resources (use the tenant paths)"}
_ADMIN = {"403": "the caller is not the tenant's admin (on his or her own user: use "
          "/api/v1/me/...)"}
_WRITE = ("400", "401", "404", "413", "422")

PORTION_DESCRIPTION = (
    "`rules`, `vip`, `blocked` and `saved` as docs/personal-rules.md describes them; "
    "validated against the tenant (extensions, external prefixes) before anything is "
    "stored")

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/login": {"post": _op(
        "Log in", "Exchange a tenant user's password for a bearer token. The answer is "
        "the same whether the user is unknown or the password wrong. Five failures a "
        "minute per user, and per source address, lock further tries out for the rest "
        "of that minute.", body="Login", public=True,
        ok=_ok("a new session", "Session"), errors=("400", "401", "413", "422", "429"),
        notes={"401": "unknown user or wrong password (one answer for both)"})},
    "/api/v1/refresh": {"post": _op(
        "Refresh the session", "A new token with a new lifetime; the old token stops "
        "working.", ok=_ok("a new session", "Session"), errors=("401", "403"),
        notes=_NOT_A_SESSION)},
    "/api/v1/logout": {"post": _op(
        "Log out", "The token stops working.", ok=_ok("logged out", status="204"),
        errors=("401", "403"), notes=_NOT_A_SESSION)},
    "/api/v1/me": {"get": _op(
        "Who am I", "The calling user (`user`), or `operator: true` for the operator.",
        ok=_ok("the caller", "Me"), errors=_AUTH)},
    "/api/v1/me/rules": {
        "get": _op("My rules", "My portion at its current version (0: never written).",
                   ok=_ok("my portion", "Portion"), errors=("401", "403", "404")),
        "put": _op("Replace my rules", "Store the portion as version `version` + 1 if "
                   "`version` is still the current one. " + PORTION_DESCRIPTION + ".",
                   body="Portion", ok=_ok("stored: the new version", "Portion"),
                   errors=(*_WRITE, "403", "409"))},
    "/api/v1/me/bindings": {
        "get": _op("My bindings", "The extensions whose devices ring for me.",
                   ok=_ok("my bindings", "Bindings"), errors=("401", "403", "404")),
        "put": _op("Hot-desk", "Bind me to exactly these extensions; one bound to another "
                   "user of the tenant moves to me.", body="Bindings",
                   ok=_ok("my bindings now", "Bindings"), errors=(*_WRITE, "403"))},
    "/api/v1/me/calls": {"get": _op(
        "My calls", "The routing decisions of my calls, newest first.",
        parameters=[{"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                "default": 50}}],
        ok=_ok("decisions", "Calls"), errors=("401", "403", "404", "422"),
        notes={"422": "`limit` is not an integer 1..500"})},
    "/api/v1/me/replay": {"post": _op(
        "Replay my calls", "Run my recorded decisions through a candidate portion and "
        "list those whose outcome would change. The candidate is validated like a PUT; "
        "its errors name fields under `rules.`.", body="ReplayRequest",
        ok=_ok("what would change", "Replay"), errors=(*_WRITE, "403"))},
    "/api/v1/calls/{uniqueid}": {"get": _op(
        "One call's trace", "Every routing decision of one call, in order: a user sees "
        "his or her own decisions, a tenant admin the tenant's, the operator any "
        "tenant's (with `?tenant=`).",
        parameters=[_path_param("uniqueid", "Asterisk's unique id of the call"),
                    {"name": "tenant", "in": "query", "required": False, "schema": _STR,
                     "description": "the call's tenant (operator only; required there)"}],
        ok=_ok("the call's decisions", "CallTrace"), errors=("400", "401", "404"),
        notes={"400": "the operator did not name the tenant (`?tenant=`)"})},
    "/api/v1/tenants/{tenant}/users": {
        "get": _op("A tenant's users", "Admin of the tenant, or the operator.",
                   parameters=[_TENANT], ok=_ok("the users", "Users"),
                   errors=("401", "403", "404")),
        "post": _op("Create a user", "Admin of the tenant, or the operator. `number` is "
                    "one of the tenant's personal numbers; `bindings` default to its home "
                    "extension (taken from another user if bound).", parameters=[_TENANT],
                    body="UserCreate", ok=_ok("created", "User", status="201"),
                    errors=(*_WRITE, "403", "409"))},
    "/api/v1/tenants/{tenant}/users/{user_id}": {
        "get": _op("A user", "Admin of the tenant, or the operator.",
                   parameters=[_TENANT, _USER], ok=_ok("the user", "User"),
                   errors=("401", "403", "404")),
        "put": _op("Change a user", "The fields given replace the user's (bindings "
                   "and password have their own paths).", parameters=[_TENANT, _USER],
                   body="UserUpdate", ok=_ok("the user now", "User"),
                   errors=(*_WRITE, "403", "409")),
        "delete": _op("Delete a user", "With the user's rules, sessions and bindings.",
                      parameters=[_TENANT, _USER], ok=_ok("deleted", status="204"),
                      errors=("401", "403", "404"))},
    "/api/v1/tenants/{tenant}/users/{user_id}/rules": {
        "get": _op("A user's rules", "As `GET /api/v1/me/rules`, for an admin.",
                   parameters=[_TENANT, _USER], ok=_ok("the portion", "Portion"),
                   errors=("401", "403", "404")),
        "put": _op("Replace a user's rules", "As `PUT /api/v1/me/rules`, for an admin.",
                   parameters=[_TENANT, _USER], body="Portion",
                   ok=_ok("stored: the new version", "Portion"),
                   errors=(*_WRITE, "403", "409"))},
    "/api/v1/tenants/{tenant}/users/{user_id}/bindings": {"put": _op(
        "Bind a user", "As `PUT /api/v1/me/bindings`, for an admin.",
        parameters=[_TENANT, _USER], body="Bindings", ok=_ok("the bindings now", "Bindings"),
        errors=(*_WRITE, "403"))},
    "/api/v1/tenants/{tenant}/users/{user_id}/password": {"put": _op(
        "Set a user's password", "Admin of the tenant, or the operator.",
        parameters=[_TENANT, _USER], body="Password", ok=_ok("set", status="204"),
        errors=(*_WRITE, "403"))},
    "/api/v1/tenants/{tenant}/users/{user_id}/replay": {"post": _op(
        "Replay a user's calls", "As `POST /api/v1/me/replay`, for an admin.",
        parameters=[_TENANT, _USER], body="ReplayRequest",
        ok=_ok("what would change", "Replay"), errors=(*_WRITE, "403"))},
    "/api/v1/tenants/{tenant}/replay": {"post": _op(
        "Replay a tenant's calls", "Admin of the tenant, or the operator. Run the "
        "decisions the tenant's routing protocol made in its venues (the recorded calls "
        "with no user) through a candidate: `tenant_file`, the TOML text of a "
        "tenants.d/NAME/tenant.toml, or `rules`, a list of tenant rules (checked against "
        "the running tenant's namespace, timezone and holidays). The candidate is "
        "validated by the bridge's tenant parser; its errors name the key under "
        "`tenant_file.` (or `rules[N]...`). Listed: decisions whose outcome would change, "
        "or that would take the default route by another rule. Round robin, split, "
        "longest idle and `agents_available` depend on state the trace does not hold: "
        "they are evaluated with fresh cursors, a fixed random seed and no agent state, "
        "and their changes are marked `stateful`. A candidate treatment is assumed "
        "answered with the digits recorded in the call (`treatment` names it); with "
        "none recorded, `would` is `treatment PROMPT`.",
        parameters=[_TENANT], body="TenantReplayRequest",
        ok=_ok("what would change", "Replay"), errors=(*_WRITE, "403"))},
    "/api/v1/ws": {"get": _op(
        "Live call pops (WebSocket)", "Upgrade to a WebSocket of JSON text frames "
        "(at most 4 KiB each; larger closes the socket with 1009) for the calls a rule "
        "`ask` offers to this user's workstations. The token goes in the first frame, "
        "never in the URL: `{\"type\": \"auth\", \"token\": TOKEN}` (a session token "
        "from /api/v1/login) within 5 s, else the socket is closed with code 4401. Then "
        "the server sends `hello` and every pop still waiting for the user; later pops, "
        "`gone` when a call is taken, times out or is abandoned, and the answer to each "
        "client frame: `accepted` or `refused` (with `reason`) to a `choose`, `pong` to a "
        "`ping`, `error` (with `reason`) to a malformed frame, which changes nothing. "
        "The first valid choice of any asked user wins; `take` rings the choosing user's "
        "own phones, `voicemail` the dialled user's mailbox, `forward` one of the "
        "choosing user's `saved` targets (`target`), `reject` refuses the call. A choice "
        "for a call that is unknown, gone, or was never offered to this socket is "
        "refused. Pops go only to the asked users of the call's tenant. The server pings "
        "every 30 s; a socket that leaves 64 frames unread is dropped; a stopping bridge "
        "closes the sockets with 1001. With several bridges on one PostgreSQL store a "
        "socket gets the pops of every bridge's calls, not only its own: a choice for a "
        "call another bridge keeps is sent there, which decides (its first valid choice "
        "wins) and answers; no answer within 3 s is `refused` (\"the bridge routing this "
        "call did not answer in time\"); a logout or a new password on any bridge closes "
        "the session's sockets on all. Frames: "
        "[ClientFrame](#clientframe), [ServerFrame](#serverframe), [PopCall](#popcall).",
        public=True,
        ok={"101": {"description": "switching to the WebSocket protocol; authenticate "
                    "with the first frame"}},
        errors=("400", "404"),
        notes={"400": "not a WebSocket upgrade request",
               "404": "this bridge serves no live call pops"})},
    "/api/v1/openapi.json": {"get": _op(
        "This document", "The OpenAPI 3.1 description of the API.", public=True,
        ok={"200": {"description": "the document",
                    "content": {"application/json": {"schema": {"type": "object"}}}}},
        errors=())},
    "/": {"get": _op(
        "The workstation page", "The web page (docs/workstation.md): index.html, with a "
        "strict Content-Security-Policy (this origin only, nothing inline), "
        "`X-Content-Type-Options: nosniff`, `Cache-Control: no-cache` and an ETag.",
        public=True, ok={"200": {"description": "index.html",
                                 "content": {"text/html": {"schema": _STR}}}},
        errors=())},
    "/static/{name}": {"get": _op(
        "The page's files", "`app.js`, `app.css` and the other files of the package's "
        "web/static folder, by exact name (the list is read once at start; no other "
        "path is served); headers as for `/`.", public=True,
        parameters=[_path_param("name", "a file name, e.g. app.js")],
        ok={"200": {"description": "the file",
                    "content": {"text/javascript": {"schema": _STR},
                                "text/css": {"schema": _STR}}}},
        errors=("404",), notes={"404": "no such file"})},
}

# Who gets a 403 where: on /me paths the operator, on a tenant's paths a non-admin.
for _path, _methods in PATHS.items():
    for _operation in _methods.values():
        _note = (_NOT_OPERATOR if _path.startswith("/api/v1/me/") else
                 _ADMIN if _path.startswith("/api/v1/tenants/") else {})
        if "403" in _operation["responses"] and _note:
            _operation["responses"]["403"]["description"] = _note["403"]
PATHS["/api/v1/tenants/{tenant}/replay"]["post"]["responses"]["403"]["description"] = (
    "the caller is not the tenant's admin")


def _object(properties: dict[str, Any], required: tuple[str, ...] = (),
            description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


_USER_FIELDS: dict[str, Any] = {
    "user_id": {**_STR, "pattern": "^[a-z][a-z0-9._-]{0,63}$"},
    "number": {**_STR, "description": "one of the tenant's [personal.numbers]"},
    "display_name": {**_STR, "maxLength": MAX_DISPLAY_NAME},
    "timezone": {**_STR, "description": "an IANA zone, or \"\" for the tenant's"},
    "admin": {**_BOOL, "description": "tenant admin: manages the tenant's users"},
}
_BINDINGS = {"type": "array", "items": _STR, "maxItems": MAX_BINDINGS, "uniqueItems": True,
             "description": "keys of the tenant's `extensions`"}
_PASSWORD = {**_STR, "minLength": 10, "maxLength": 128}
_TRACE = _object({
    "tenant": _STR, "uniqueid": _STR, "at": {**_NUM, "description": "Unix time"},
    "venue": _STR, "user_id": _STR,
    "request": {**_INT, "description": "the call's Nth route request"},
    "previous": {**_STR, "description": "\"KIND:VALUE STATUS\" that led here, or \"\""},
    "outcome": {**_STR, "description": "\"route KIND:VALUE\", \"reject CAUSE\" or "
                "\"default CAUSE\""},
    "rule": {**_STR, "description": "the rule that matched: \"#2 night\", \"default\""},
    "why": _STR, "inputs": {"type": "object", "additionalProperties": _STR},
    "call": {"type": "object", "additionalProperties": _STR}},
    description="one routing decision")
_PORTION_PROPERTIES: dict[str, Any] = {
    "rules": {"type": "array", "items": {"type": "object"}, "maxItems": 50},
    "vip": {**_STRINGS, "maxItems": 100}, "blocked": {**_STRINGS, "maxItems": 100},
    "saved": {**_STRINGS, "maxItems": 20}}

SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _object(
        {"field": {**_STR, "description": "the field at fault, a dotted path"},
         "reason": _STR, "current": {**_INT, "description": "409 on a stale version: "
                                     "the current version"}}, ("field", "reason"))},
        ("error",)),
    "Login": _object({"tenant": _STR, "user": _USER_FIELDS["user_id"], "password": _STR},
                     ("tenant", "user", "password")),
    "Session": _object({"token": {**_STR, "description": "send as `Authorization: Bearer`"},
                        "expires_at": {**_NUM, "description": "Unix time"},
                        "user": _ref("User")}, ("token", "expires_at", "user")),
    "User": _object({"tenant": _STR, **_USER_FIELDS, "bindings": _BINDINGS},
                    ("tenant", *_USER_FIELDS, "bindings")),
    "Users": _object({"users": {"type": "array", "items": _ref("User")}}, ("users",)),
    "UserCreate": _object({**_USER_FIELDS, "bindings": _BINDINGS, "password": _PASSWORD},
                          ("user_id", "number")),
    "UserUpdate": _object({k: v for k, v in _USER_FIELDS.items() if k != "user_id"}),
    "Me": _object({"operator": _BOOL, "user": {"oneOf": [_ref("User"), {"type": "null"}]}},
                  ("operator", "user")),
    "Portion": _object({"version": {**_INT, "minimum": 0, "description": "on PUT: the "
                                    "version read; on GET: the current one"},
                        **_PORTION_PROPERTIES}, ("version",),
                       description=PORTION_DESCRIPTION),
    "Bindings": _object({"extensions": _BINDINGS}, ("extensions",)),
    "Password": _object({"password": _PASSWORD}, ("password",)),
    "Trace": _TRACE,
    "Calls": _object({"calls": {"type": "array", "items": _ref("Trace")}}, ("calls",)),
    "CallTrace": _object({"tenant": _STR, "uniqueid": _STR,
                          "decisions": {"type": "array", "items": _ref("Trace")}},
                         ("tenant", "uniqueid", "decisions")),
    "ReplayRequest": _object({"rules": _object(
        {"version": {**_INT, "description": "ignored"}, **_PORTION_PROPERTIES})},
        ("rules",)),
    "TenantReplayRequest": _object({
        "tenant_file": {**_STR, "description": "the TOML text of a tenant file (the keys "
                        "of tenants.d/NAME/tenant.toml); or give `rules`"},
        "rules": {"type": "array", "items": {"type": "object"},
                  "description": "tenant routing rules, as a tenant file's `[[rules]]`"}},
        description="exactly one of `tenant_file` and `rules`"),
    "Replay": _object({
        "changed": {"type": "array", "items": _object(
            {"uniqueid": _STR, "at": _NUM, "was": _STR, "would": _STR, "rule_was": _STR,
             "rule_would": _STR,
             "stateful": {**_BOOL, "description": "tenant replay: the candidate's answer "
                          "depends on state the trace does not hold (round robin, split, "
                          "agents); `would` is one possible answer"},
             "treatment": {**_STR, "description": "tenant replay: the treatment the "
                           "candidate plays first (prompt, or \"moh\"); \"\" none"}})},
        "replayed": {**_INT, "description": "decisions evaluated"}}, ("changed", "replayed")),
    "PopCall": _object({
        "call_id": {**_STR, "description": "the call's handle: `call` of choose and gone"},
        "user_id": {**_STR, "description": "the dialled user"},
        "number": {**_STR, "description": "the dialled personal number"},
        "ani": {**_STR, "description": "the caller's number (\"\" withheld)"},
        "ani_name": _STR,
        "lookup": {"type": "object", "additionalProperties": _STR, "maxProperties": 8,
                   "description": "what the tenant's VTS found about the caller"},
        "expires_at": {**_NUM, "description": "Unix time the pop times out"},
        "group": {**_STR, "description": "the pickup group asked, or \"\""},
        "choices": {**_STRINGS, "description": "take, voicemail, forward, reject"},
        "saved": {**_STRINGS, "maxItems": 20,
                  "description": "the receiving user's saved targets: forward's `target`"}},
        ("call_id", "user_id", "number", "ani", "ani_name", "lookup", "expires_at",
         "group", "choices", "saved"),
        description="one call waiting for a choice, as the `pop` frame carries it"),
    "ClientFrame": _object({
        "type": {**_STR, "description": "auth (first frame, once), choose, ping"},
        "token": {**_STR, "maxLength": 256, "description": "auth: the session token"},
        "call": {**_STR, "maxLength": 128, "description": "choose: the pop's `call_id`"},
        "choice": {**_STR, "description": "choose: take, voicemail, forward or reject"},
        "target": {**_STR, "maxLength": 128,
                   "description": "choose forward: one of the pop's `saved`"}},
        ("type",), description="a frame the client sends (`GET /api/v1/ws`); strings "
        "without CR, LF or NUL; keys other than a type's own are refused"),
    "ServerFrame": _object({
        "type": {**_STR, "description": "hello, pop, gone, accepted, refused, pong, error"},
        "tenant": {**_STR, "description": "hello"},
        "user": {**_STR, "description": "hello: the authenticated user"},
        "call": {"oneOf": [_ref("PopCall"), _STR],
                 "description": "pop: the call; gone, accepted, refused: its `call_id`"},
        "reason": {**_STR, "description": "gone: taken, timeout or abandoned; refused, "
                   "error: why, for a person"},
        "by": {**_STR, "description": "gone taken: the user who chose"}},
        ("type",), description="a frame the server sends (`GET /api/v1/ws`)"),
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy each call: callers may not share it)."""
    doc = {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION,
                 "description": "Users of a tenant manage their own call routing rules; "
                 "tenant admins manage the tenant's users; the operator all tenants. "
                 "Errors are `{\"error\": {\"field\": ..., \"reason\": ...}}`. Any path "
                 "answers 503 (`field` \"store\", `Retry-After`) while the personal store "
                 "cannot be reached: nothing was read or changed, and calls are still "
                 "routed from the bridge's cached directory."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a session token from /api/v1/login, or the "
                       "operator's token ([api] operator_token_file)"}}},
        "security": [{"bearer": []}],
    }
    result: dict[str, Any] = json.loads(json.dumps(doc))
    return result


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "oneOf" in schema:
        return " or ".join(_schema_text(s) for s in schema["oneOf"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_schema_text(schema.get('items', {}))}"
    return kind


def markdown() -> str:
    """docs/api.md: every path and method, then every schema."""
    doc = document()
    lines = [f"# {TITLE}", "",
             "<!-- Generated by `python -m ami_bridge.api.openapi --markdown`; do not edit. -->",
             "", doc["info"]["description"], "",
             "Authentication: `Authorization: Bearer TOKEN` on every path but those marked "
             "*public*. The machine-readable document: `GET /api/v1/openapi.json`.", "",
             "## Paths", ""]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            public = " (public)" if op.get("security") == [] else ""
            lines += [f"### `{method.upper()} {path}`{public}", "", f"{op['summary']}. "
                      f"{op['description']}", ""]
            for param in op.get("parameters", []):
                lines.append(f"- {param['in']} parameter `{param['name']}`"
                             f"{'' if param.get('required') else ' (optional)'}"
                             f"{': ' + param['description'] if 'description' in param else ''}")
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                lines.append(f"- body: {_schema_text(schema)}")
            for status, answer in op["responses"].items():
                content = answer.get("content", {}).get("application/json")
                shape = f" ({_schema_text(content['schema'])})" if content else ""
                lines.append(f"- {status}{shape}: {answer['description']}")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        lines += [f"### {name}", ""]
        if "description" in schema:
            lines += [schema["description"], ""]
        required = set(schema.get("required", []))
        lines += ["| field | type | required | notes |", "| --- | --- | --- | --- |"]
        for field, sub in schema.get("properties", {}).items():
            notes = sub.get("description", "")
            limits = [f"{k} {sub[k]}" for k in ("pattern", "minLength", "maxLength",
                                                 "minimum", "maximum", "maxItems")
                      if k in sub]
            notes = "; ".join(x for x in (notes, ", ".join(limits)) if x).replace("|", r"\|")
            lines.append(f"| `{field}` | {_schema_text(sub)} | "
                         f"{'yes' if field in required else 'no'} | {notes} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ami_bridge.api.openapi",
        description="Print the API's OpenAPI 3.1 document (JSON), or docs/api.md.")
    parser.add_argument("--markdown", action="store_true",
                        help="print the Markdown page (docs/api.md) instead of JSON")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        sys.stdout.write(json.dumps(document(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
