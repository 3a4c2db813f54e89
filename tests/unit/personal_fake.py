"""A tiny stand-in for `ami_bridge.tenants.personal` (parse_portion, evaluate) for the
API tests while the real rule module is written on another branch. It checks only what
the API tests need (targets, unknown keys, the forbidden characters) and evaluates only
`when.callers`, `forward` (always) and `reject`; the tests' portions use the real
vocabulary, so the `rules_parser` fixture can switch to the real module unchanged."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ami_bridge.namespace import NUMBER_RE
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.personal import PersonalCall, PortionError, RuleSet, Step, Trace

_FORBIDDEN = re.compile(r"[\r\n\x00&,();|${}\[\]\"'\\`]")
_RULE_KEYS = {"name", "when", "action", "on", "after", "target", "ring", "steps", "mode",
              "then", "cause"}


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise PortionError(field, "must be a string of at most 64 characters")
    if _FORBIDDEN.search(value):
        raise PortionError(field, "contains a character that is not allowed")
    return value


def _target(value: Any, field: str, extensions: Collection[str] | None,
            prefixes: Sequence[str]) -> str:
    text = _string(value, field)
    if text == "voicemail":
        return text
    kind, sep, rest = text.partition(":")
    if not sep:
        raise PortionError(field, "must be KIND:VALUE")
    if kind == "extension":
        if extensions is not None and rest not in extensions:
            raise PortionError(field, f"{rest!r} is not an extension of the tenant")
    elif kind == "external":
        if not NUMBER_RE.fullmatch(rest) or not any(rest.startswith(p) for p in prefixes):
            raise PortionError(field, f"{rest!r} matches none of the external prefixes")
    else:
        raise PortionError(field, f"unknown target kind {kind!r}")
    return text


def parse_portion(raw: object, *, extensions: Collection[str] | None,
                  external_prefixes: Sequence[str], ring_time: int) -> RuleSet:
    if not isinstance(raw, Mapping):
        raise PortionError("", "must be an object")
    for key in raw:
        if key not in ("rules", "vip", "blocked", "saved"):
            raise PortionError(str(key), "unknown key")
    lists = {}
    for key in ("vip", "blocked", "saved"):
        items = raw.get(key, [])
        if not isinstance(items, list):
            raise PortionError(key, "must be a list")
        lists[key] = tuple(_string(v, f"{key}[{i}]") for i, v in enumerate(items))
    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        raise PortionError("rules", "must be a list")
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        if not isinstance(rule, Mapping):
            raise PortionError(where, "must be an object")
        for key in rule:
            if key not in _RULE_KEYS:
                raise PortionError(f"{where}.{key}", "unknown key")
        if rule.get("action") not in ("ring", "forward", "follow_me", "dnd", "voicemail",
                                      "reject"):
            raise PortionError(f"{where}.action", "unknown action")
        if "target" in rule:
            _target(rule["target"], f"{where}.target", extensions, external_prefixes)
        when = rule.get("when", {})
        if not isinstance(when, Mapping) or not isinstance(when.get("callers", []), list):
            raise PortionError(f"{where}.when", "must be an object; callers a list")
        for i, pattern in enumerate(when.get("callers", [])):
            _string(pattern, f"{where}.when.callers[{i}]")
    return RuleSet(rules=tuple(rules), vip=lists["vip"], blocked=lists["blocked"],
                   saved=lists["saved"])


def _matches(pattern: str, ani: str) -> bool:
    if pattern.endswith("*"):
        return ani.startswith(pattern[:-1])
    return ani == pattern


def evaluate(rules: RuleSet, call: PersonalCall, now: dt.datetime, *, timezone: str,
             holidays: Sequence[str], ring_time: int) -> Step:
    for index, rule in enumerate(rules.rules, 1):
        callers = rule.get("when", {}).get("callers")
        if callers and not any(_matches(p, call.ani) for p in callers):
            continue
        trace = Trace(rule=f"#{index} {rule.get('name', '')}".strip(), why="fake")
        if rule["action"] == "forward":
            return Step("route", Target.parse(rule["target"]), trace)
        if rule["action"] == "reject":
            return Step("reject", None, trace, cause=rule.get("cause", "busy"))
        break
    trace = Trace(rule="default", why="fake")
    if call.bindings:
        return Step("route", Target("extension", call.bindings[0]), trace)
    return Step("reject", None, trace, cause="busy")
