"""Bridge configuration: one TOML file loaded once into frozen dataclasses.

Every error names the file, the key and the bad value (`ConfigError`). Components get
their settings as keyword arguments from these objects and never read globals. The
tenants' routing protocols are validated here with the same parser the VTS runtime
uses (`tenants.routing.parse_protocol`), so a bad rule stops the load, not a call.

Layout (see examples/bridge.toml, docs/configuration.md):

    [bridge]          agi_listen, router_timeout, max_pending_per_vts, redirect_limit,
                      max_route_requests, control_socket
    [vts.NAME]        command (optional: any-language VTS), grace_period
    [tenants.NAME]    timezone, targets / queues / external_prefixes (the tenant's
                      namespace), prompts, moh_class, holidays, rules
    [tenants.NAME.venues.CONTEXT]   vts, router_timeout, default_targets, redirect_limit
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenants.routing import TARGET_RE, RuleError, parse_protocol

DEFAULT_AGI_PORT = 4573  # the FastAGI port Asterisk assumes for agi:// URLs
DEFAULT_ROUTER_TIMEOUT = 2.0
DEFAULT_MAX_PENDING_PER_VTS = 2000
# Redirections venue -> default -> venue before the call is rejected (the usual value in
# transaction-server products); reset whenever the VTS gives a real instruction.
DEFAULT_REDIRECT_LIMIT = 4
# Route requests one call may make in all (re-entries after busy/no answer included):
# a last guard against a VTS that routes a call round a loop of failing targets forever.
DEFAULT_MAX_ROUTE_REQUESTS = 16
DEFAULT_CONTROL_SOCKET = "/run/ami-bridge/control.sock"
_QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch
_PREFIX_RE = re.compile(r"\+?[0-9]{0,15}")  # fullmatch
_SOUND_DIR_RE = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,2}")  # fullmatch
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # fullmatch
# Dialplan context names: Asterisk allows more, we keep to what is safe everywhere.
_CONTEXT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")  # fullmatch


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


@dataclass(frozen=True)
class VtsConfig:
    name: str
    command: tuple[str, ...]  # empty: the shipped runtime (python -m tenants.worker)
    grace_period: float
    tenants: tuple[str, ...]  # filled in from the venues that map to this VTS


@dataclass(frozen=True)
class VenueConfig:
    context: str
    tenant: str
    vts: str
    router_timeout: float
    default_targets: tuple[str, ...] = ()  # tried in turn, then reject
    redirect_limit: int = DEFAULT_REDIRECT_LIMIT


@dataclass(frozen=True)
class TenantConfig:
    name: str
    timezone: str
    targets: frozenset[str]
    holidays: tuple[str, ...]
    rules: tuple[Mapping[str, Any], ...]  # validated raw rules, sent to the VTS as data
    queues: frozenset[str] = frozenset()
    external_prefixes: tuple[str, ...] = ()  # "" allows any number; none: no external
    prompts: str = ""  # the tenant's sound directory, prefixed to every prompt
    moh_class: str = "default"


@dataclass(frozen=True)
class BridgeConfig:
    path: Path
    agi_host: str
    agi_port: int
    router_timeout: float
    max_pending_per_vts: int
    tenants: Mapping[str, TenantConfig]
    venues: Mapping[str, VenueConfig]
    vts: Mapping[str, VtsConfig]
    redirect_limit: int = DEFAULT_REDIRECT_LIMIT
    max_route_requests: int = DEFAULT_MAX_ROUTE_REQUESTS
    control_socket: str = DEFAULT_CONTROL_SOCKET


def load(path: Path) -> BridgeConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(raw, path=path)


def parse(raw: Mapping[str, Any], *, path: Path) -> BridgeConfig:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {message}")

    _no_unknown(raw, {"bridge", "vts", "tenants"}, "", fail)
    bridge = _table(raw, "bridge", fail)
    _no_unknown(bridge, {"agi_listen", "router_timeout", "max_pending_per_vts", "redirect_limit",
                         "max_route_requests", "control_socket"}, "bridge", fail)
    host, port = _listen(bridge.get("agi_listen", f"127.0.0.1:{DEFAULT_AGI_PORT}"), fail)
    router_timeout = _positive(bridge, "router_timeout", DEFAULT_ROUTER_TIMEOUT, "bridge", fail)
    max_pending = _count(bridge, "max_pending_per_vts", DEFAULT_MAX_PENDING_PER_VTS, "bridge",
                         fail)
    redirect_limit = _count(bridge, "redirect_limit", DEFAULT_REDIRECT_LIMIT, "bridge", fail)
    max_requests = _count(bridge, "max_route_requests", DEFAULT_MAX_ROUTE_REQUESTS, "bridge",
                          fail)
    control_socket = bridge.get("control_socket", DEFAULT_CONTROL_SOCKET)
    if not isinstance(control_socket, str) or not control_socket.startswith("/"):
        raise fail("bridge.control_socket", f"must be an absolute path, got {control_socket!r}")

    vts_raw = _table(raw, "vts", fail)
    tenants: dict[str, TenantConfig] = {}
    venues: dict[str, VenueConfig] = {}
    for tname, traw in _table(raw, "tenants", fail).items():
        key = f"tenants.{tname}"
        _check_name(tname, key, fail)
        if not isinstance(traw, Mapping):
            raise fail(key, "must be a table")
        tenant, tvenues = _tenant(tname, traw, key, router_timeout, redirect_limit, fail)
        tenants[tname] = tenant
        for context, venue in tvenues.items():
            if context in venues:
                raise fail(f"{key}.venues.{context}",
                           f"venue already belongs to tenant {venues[context].tenant!r}; "
                           "a venue belongs to exactly one tenant")
            if venue.vts not in vts_raw:
                raise fail(f"{key}.venues.{context}.vts", f"no [vts.{venue.vts}] section")
            venues[context] = venue

    vts: dict[str, VtsConfig] = {}
    for vname, vraw in vts_raw.items():
        key = f"vts.{vname}"
        _check_name(vname, key, fail)
        if not isinstance(vraw, Mapping):
            raise fail(key, "must be a table")
        _no_unknown(vraw, {"command", "grace_period"}, key, fail)
        command = vraw.get("command", [])
        if not isinstance(command, list) or not all(isinstance(c, str) and c for c in command):
            raise fail(f"{key}.command", f"must be a list of non-empty strings, got {command!r}")
        served = sorted({v.tenant for v in venues.values() if v.vts == vname})
        vts[vname] = VtsConfig(
            name=vname, command=tuple(command),
            grace_period=_positive(vraw, "grace_period", 3.0, key, fail),
            tenants=tuple(served),
        )
    return BridgeConfig(
        path=path, agi_host=host, agi_port=port, router_timeout=router_timeout,
        max_pending_per_vts=max_pending, tenants=tenants, venues=venues, vts=vts,
        redirect_limit=redirect_limit, max_route_requests=max_requests,
        control_socket=control_socket,
    )


def _tenant(
    name: str, raw: Mapping[str, Any], key: str, router_timeout: float, redirect_limit: int,
    fail: Any,
) -> tuple[TenantConfig, dict[str, VenueConfig]]:
    _no_unknown(raw, {"timezone", "targets", "holidays", "rules", "venues", "queues",
                      "external_prefixes", "prompts", "moh_class"}, key, fail)
    queues = _names(raw, "queues", _QUEUE_RE, key, fail)
    prefixes = _names(raw, "external_prefixes", _PREFIX_RE, key, fail)
    prompts = raw.get("prompts", "")
    if not isinstance(prompts, str) or (prompts and not _SOUND_DIR_RE.fullmatch(prompts)):
        raise fail(f"{key}.prompts", f"must be a sound directory like 'tenants/acme', got "
                   f"{prompts!r}")
    moh_class = raw.get("moh_class", "default")
    if not isinstance(moh_class, str) or not _QUEUE_RE.fullmatch(moh_class):
        raise fail(f"{key}.moh_class", f"must be a music-on-hold class name, got {moh_class!r}")
    timezone = raw.get("timezone", "UTC")
    targets = raw.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise fail(f"{key}.targets", f"must be a list of extensions, got {targets!r}")
    for target in targets:
        if not TARGET_RE.fullmatch(target):
            raise fail(f"{key}.targets", f"{target!r} is not a valid extension")
    holidays = raw.get("holidays", [])
    rules = raw.get("rules", [])
    try:
        protocol = parse_protocol(rules, timezone=str(timezone), holidays=holidays, where="rules")
    except RuleError as exc:
        # RuleError messages start with the key inside the tenant ("rules[1].action: ...").
        raise ConfigError(f"{fail(key, '').args[0][:-2]}.{exc}") from None
    for rule in protocol.rules:
        for target in rule.targets:
            kind, sep, value = target.partition(":")
            if not sep and target not in targets:
                raise fail(f"{key}.rules", f"rule {rule.name!r} routes to {target!r}, "
                           f"which is not in {key}.targets")
            if kind == "queue" and value not in queues:
                raise fail(f"{key}.rules", f"rule {rule.name!r} routes to {target!r}, "
                           f"which is not in {key}.queues")
            if kind == "external" and not any(value.startswith(p) for p in prefixes):
                raise fail(f"{key}.rules", f"rule {rule.name!r} routes to {target!r}, "
                           f"which matches none of {key}.external_prefixes")
    venues: dict[str, VenueConfig] = {}
    for context, vraw in _table(raw, "venues", fail, prefix=key).items():
        vkey = f"{key}.venues.{context}"
        if not _CONTEXT_RE.fullmatch(context):
            raise fail(vkey, f"{context!r} is not a safe dialplan context name")
        if not isinstance(vraw, Mapping):
            raise fail(vkey, "must be a table")
        _no_unknown(vraw, {"vts", "router_timeout", "default_targets", "redirect_limit"}, vkey,
                    fail)
        vts_name = vraw.get("vts")
        if not isinstance(vts_name, str):
            raise fail(f"{vkey}.vts", f"must name a [vts.NAME] section, got {vts_name!r}")
        defaults = vraw.get("default_targets", [])
        if not isinstance(defaults, list) or not all(isinstance(t, str) for t in defaults):
            raise fail(f"{vkey}.default_targets", f"must be a list of extensions, got {defaults!r}")
        outside = [t for t in defaults if t not in targets]
        if outside:
            raise fail(f"{vkey}.default_targets", f"{outside[0]!r} is not in {key}.targets")
        venues[context] = VenueConfig(
            context=context, tenant=name, vts=vts_name,
            router_timeout=_positive(vraw, "router_timeout", router_timeout, vkey, fail),
            default_targets=tuple(defaults),
            redirect_limit=_count(vraw, "redirect_limit", redirect_limit, vkey, fail),
        )
    tenant = TenantConfig(
        name=name, timezone=str(timezone), targets=frozenset(targets),
        holidays=tuple(str(h) for h in holidays), rules=tuple(rules),
        queues=frozenset(queues), external_prefixes=tuple(prefixes), prompts=prompts,
        moh_class=moh_class,
    )
    return tenant, venues


def _count(raw: Mapping[str, Any], key: str, default: int, where: str, fail: Any) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise fail(f"{where}.{key}", f"must be a positive integer, got {value!r}")
    return value


def _names(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str], where: str,
           fail: Any) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{where}.{key}", f"must be a list of strings, got {value!r}")
    for item in value:
        if not pattern.fullmatch(item):
            raise fail(f"{where}.{key}", f"{item!r} is not valid")
    return value


def _table(raw: Mapping[str, Any], key: str, fail: Any, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise fail(f"{prefix}.{key}" if prefix else key, f"must be a table, got {value!r}")
    return value


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], key: str, fail: Any) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _check_name(name: str, key: str, fail: Any) -> None:
    if not _NAME_RE.fullmatch(name):
        raise fail(key, f"name {name!r} must match {_NAME_RE.pattern}")


def _positive(raw: Mapping[str, Any], key: str, default: float, where: str, fail: Any) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise fail(f"{where}.{key}", f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _listen(value: Any, fail: Any) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise fail("bridge.agi_listen", f"expected HOST:PORT, got {value!r}")
    return host, int(port)
