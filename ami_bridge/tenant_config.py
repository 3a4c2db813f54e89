"""One tenant's configuration: identity, namespace, venues, resources, routing protocol.

A tenant is declared either inline in the bridge config (`[tenants.NAME]`) or, the way
operators keep it, as its own file `tenants.d/NAME/tenant.toml` holding the same keys at
top level (see docs/configuration.md). `parse_tenant` validates one tenant; errors name
the file, the dotted key and the bad value. The namespace a VTS may route into is
`targets` (extensions of `<tenant>-internal`: the keys of `extensions` plus any listed
in `targets` for hand-written dialplan), `queues` and `external_prefixes`. `extensions`,
`queues` (as tables), `outbound`, `language`, `moh_class` and `channel_limit` are what
`ami-bridge conf render` needs to write the tenant's dialplan fragment. Whether the
contexts, endpoints, trunks and prompt directory it names are the tenant's own needs all
tenants and the operator's grants: that check is `ami_bridge.ownership`, run by the loader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ami_bridge.namespace import CONTEXT_RE, QUEUE_RE
from ami_bridge.namespace import EXTENSION_RE as TARGET_RE
from ami_bridge.namespace import TENANT_NAME_RE as NAME_RE
from ami_bridge.personal.model import USER_ID_RE
from ami_bridge.tenants.messages import GROUP_RE
from ami_bridge.tenants.routing import RuleError, parse_protocol
from ami_bridge.validation import (
    Fail,
    join,
    names,
    no_unknown,
    positive,
    string,
    table,
)
from ami_bridge.validation import (
    count as count_value,
)

DEFAULT_REDIRECT_LIMIT = 4
PREFIX_RE = re.compile(r"\+?[0-9]{0,15}")  # fullmatch
SOUND_DIR_RE = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,2}")  # fullmatch
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")  # fullmatch
# What a rendered extension or queue member dials: one channel, no '&' (a second
# channel), no ',' (Dial options), nothing evaluated.
DIAL_RE = re.compile(r"(PJSIP|SIP|IAX2|DAHDI|Local)/[A-Za-z0-9_.@+-]{1,80}")  # fullmatch
# The outbound route: a dial string with one {number} placeholder.
OUTBOUND_RE = re.compile(r"(PJSIP|SIP|IAX2|DAHDI)/[A-Za-z0-9_.@+-]*\{number\}[A-Za-z0-9_.@+-]*")
DEFAULT_RING_TIME = 20
MAX_RING_TIME = 300
# How a venue's calls reach the bridge (docs/drivers.md): FastAGI (a TCP connection from
# Asterisk per call), AsyncAGI (AGI over the bridge's own AMI session) or ARI (a Stasis
# application over the bridge's ARI WebSocket). The routing core is the same for all.
DRIVERS = ("fastagi", "asyncagi", "ari")
DEFAULT_DRIVER = "fastagi"
QUEUE_STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear")


@dataclass(frozen=True)
class VenueConfig:
    context: str
    tenant: str
    vts: str
    router_timeout: float
    default_targets: tuple[str, ...] = ()  # tried in turn, then reject
    redirect_limit: int = DEFAULT_REDIRECT_LIMIT
    # A personal venue (the tenant's [personal] context): calls to users' numbers, routed
    # by each user's own rules (ami_bridge.tenants.personal) in the tenant's VTS.
    personal: bool = False
    driver: str = DEFAULT_DRIVER  # one of DRIVERS: how the venue asks the bridge


@dataclass(frozen=True)
class PersonalConfig:
    """`[personal]`: where calls to the tenant's users enter, and their fallbacks."""

    context: str
    vts: str
    voicemail_context: str
    ring_time: int = DEFAULT_RING_TIME  # seconds "ring my phones" rings by default
    driver: str = DEFAULT_DRIVER  # DRIVERS: how the personal venue asks the bridge
    numbers: Mapping[str, str] = field(default_factory=dict)  # number -> home extension
    # pickup group -> its members' user ids: an `ask` rule naming the group pops the
    # call up on every member's workstation (the dialled user must be a member)
    pickup_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueConfig:
    name: str
    members: tuple[str, ...] = ()
    strategy: str = "leastrecent"
    timeout: int = 15


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
    language: str = "en"
    channel_limit: int = 0  # concurrent calls in the tenant's venues; 0: no limit
    extensions: Mapping[str, str] = field(default_factory=dict)  # for rendering
    queue_configs: Mapping[str, QueueConfig] = field(default_factory=dict)
    outbound: str = ""  # dial template with {number}; "" : no outbound route rendered
    operator: str = "operator"  # where the venue's own fallback (bridge down) goes
    source: str = ""  # the file it came from
    devices: tuple[str, ...] = ()  # agent devices besides those its extensions dial
    personal: PersonalConfig | None = None  # users' own routing rules ([personal])


_TENANT_KEYS = {"timezone", "targets", "holidays", "rules", "venues", "queues",
                "external_prefixes", "prompts", "moh_class", "language", "channel_limit",
                "extensions", "outbound", "operator", "devices", "personal"}


def parse_tenant(
    name: str, raw: Mapping[str, Any], *, fail: Fail, prefix: str, router_timeout: float,
    redirect_limit: int, source: str = "",
) -> tuple[TenantConfig, dict[str, VenueConfig]]:
    """Validate one tenant; `prefix` is its key in the file ("tenants.acme" or "")."""
    if not NAME_RE.fullmatch(name):
        raise fail(prefix or "name", f"name {name!r} must match {NAME_RE.pattern}")
    no_unknown(raw, _TENANT_KEYS, prefix, fail)
    extensions = _extensions(raw, prefix, fail)
    targets = set(extensions) | set(_targets(raw, prefix, fail))
    queue_configs = _queues(raw, prefix, fail)
    prefixes = names(raw, "external_prefixes", PREFIX_RE, prefix, fail)
    prompts = string(raw, "prompts", "", SOUND_DIR_RE, prefix, fail,
                     what="a sound directory like 'tenants/acme'")
    moh_class = string(raw, "moh_class", "default", QUEUE_RE, prefix, fail,
                       what="a music-on-hold class name")
    language = string(raw, "language", "en", LANGUAGE_RE, prefix, fail,
                      what="a language code like 'en' or 'fr_CA'")
    outbound = string(raw, "outbound", "", OUTBOUND_RE, prefix, fail,
                      what="a dial string with {number}, like 'PJSIP/{number}@carrier'")
    operator = string(raw, "operator", "operator", TARGET_RE, prefix, fail,
                      what="an extension")
    if extensions and operator not in extensions:
        raise fail(join(prefix, "operator"), f"{operator!r} is not in {join(prefix, 'extensions')}")
    channel_limit = count_value(raw, "channel_limit", 0, prefix, fail, minimum=0)
    timezone = raw.get("timezone", "UTC")
    holidays = raw.get("holidays", [])
    rules = raw.get("rules", [])
    try:
        protocol = parse_protocol(rules, timezone=str(timezone), holidays=holidays, where="rules")
    except RuleError as exc:
        # RuleError messages start with the key inside the tenant ("rules[1].action: ...").
        key, _, message = str(exc).partition(": ")
        raise fail(join(prefix, key), message) from None
    for rule in protocol.rules:
        for target in rule.targets:
            _check_rule_target(rule.name, target, targets, set(queue_configs), prefixes,
                               prefix, fail)
    venues: dict[str, VenueConfig] = {}
    for context, vraw in table(raw, "venues", fail, prefix).items():
        venues[context] = _venue(name, context, vraw, join(prefix, f"venues.{context}"),
                                 targets, router_timeout, redirect_limit, fail)
    personal = _personal(name, raw, extensions, prefix, router_timeout, redirect_limit, fail)
    if personal is not None:
        _, venue = personal
        if venue.context in venues:
            raise fail(join(prefix, "personal.context"), f"{venue.context!r} is also a venue")
        venues[venue.context] = venue
    tenant = TenantConfig(
        name=name, timezone=str(timezone), targets=frozenset(targets),
        holidays=tuple(str(h) for h in holidays), rules=tuple(rules),
        queues=frozenset(queue_configs), external_prefixes=tuple(prefixes), prompts=prompts,
        moh_class=moh_class, language=language, channel_limit=channel_limit,
        extensions=dict(sorted(extensions.items())), queue_configs=queue_configs,
        outbound=outbound, operator=operator, source=source,
        devices=tuple(names(raw, "devices", DIAL_RE, prefix, fail)),
        personal=personal[0] if personal is not None else None,
    )
    return tenant, venues


def _personal(tenant: str, raw: Mapping[str, Any], extensions: Mapping[str, str], prefix: str,
              router_timeout: float, redirect_limit: int,
              fail: Fail) -> tuple[PersonalConfig, VenueConfig] | None:
    """`[personal]`: the personal venue and the users' numbers. Each number's home
    extension must dial a device of the tenant's `extensions` (rung when the bridge is
    down, and a new user's first binding)."""
    if "personal" not in raw:
        return None
    key = join(prefix, "personal")
    praw = table(raw, "personal", fail, prefix)
    no_unknown(praw, {"context", "vts", "router_timeout", "ring_time", "voicemail_context",
                      "numbers", "pickup_groups", "driver"}, key, fail)
    context = string(praw, "context", "", CONTEXT_RE, key, fail, what="a context name")
    if not context or not CONTEXT_RE.fullmatch(context):
        raise fail(join(key, "context"), f"must be a context name, got {context!r}")
    vts_name = praw.get("vts")
    if not isinstance(vts_name, str):
        raise fail(join(key, "vts"), f"must name a [vts.NAME] section, got {vts_name!r}")
    voicemail = string(praw, "voicemail_context", tenant, CONTEXT_RE, key, fail,
                       what="a voicemail.conf context name")
    ring_time = count_value(praw, "ring_time", DEFAULT_RING_TIME, key, fail)
    if ring_time > MAX_RING_TIME:
        raise fail(join(key, "ring_time"), f"must be at most {MAX_RING_TIME} s, got {ring_time}")
    numbers = table(praw, "numbers", fail, key)
    if not numbers:
        raise fail(join(key, "numbers"), "must map at least one personal number to its "
                   "home extension, like \"2001\" = \"1001\"")
    for number, home in numbers.items():
        if not TARGET_RE.fullmatch(number):
            raise fail(join(key, f"numbers.{number}"), f"{number!r} is not a valid extension")
        if not isinstance(home, str) or home not in extensions:
            raise fail(join(key, f"numbers.{number}"), f"the home extension {home!r} is not "
                       f"in {join(prefix, 'extensions')}")
    if set(numbers) & set(extensions):
        clash = sorted(set(numbers) & set(extensions))[0]
        raise fail(join(key, f"numbers.{clash}"), f"{clash!r} is also a device extension in "
                   f"{join(prefix, 'extensions')}; a personal number must be its own")
    venue = VenueConfig(
        context=context, tenant=tenant, vts=vts_name,
        router_timeout=positive(praw, "router_timeout", router_timeout, key, fail),
        redirect_limit=redirect_limit, personal=True, driver=_driver(praw, key, fail))
    groups = {}
    pickup = table(praw, "pickup_groups", fail, key)
    for group in pickup:
        gkey = join(key, f"pickup_groups.{group}")
        if not GROUP_RE.fullmatch(group):
            raise fail(gkey, f"{group!r} is not a group name ({GROUP_RE.pattern})")
        groups[group] = tuple(names(pickup, group, USER_ID_RE, join(key, "pickup_groups"),
                                    fail))
    return PersonalConfig(context=context, vts=vts_name, voicemail_context=voicemail,
                          ring_time=ring_time, numbers=dict(sorted(numbers.items())),
                          driver=venue.driver,
                          pickup_groups=groups), venue


def _targets(raw: Mapping[str, Any], prefix: str, fail: Fail) -> list[str]:
    targets = raw.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise fail(join(prefix, "targets"), f"must be a list of extensions, got {targets!r}")
    for target in targets:
        if not TARGET_RE.fullmatch(target):
            raise fail(join(prefix, "targets"), f"{target!r} is not a valid extension")
    return targets


def _extensions(raw: Mapping[str, Any], prefix: str, fail: Fail) -> dict[str, str]:
    key = join(prefix, "extensions")
    extensions = table(raw, "extensions", fail, prefix)
    for ext, dial in extensions.items():
        if not TARGET_RE.fullmatch(ext):
            raise fail(f"{key}.{ext}", f"{ext!r} is not a valid extension")
        if not isinstance(dial, str) or not DIAL_RE.fullmatch(dial):
            raise fail(f"{key}.{ext}", f"must dial one channel like 'PJSIP/alice', got {dial!r}")
    return dict(extensions)


def _queues(raw: Mapping[str, Any], prefix: str, fail: Fail) -> dict[str, QueueConfig]:
    key = join(prefix, "queues")
    value = raw.get("queues", [])
    if isinstance(value, list):  # just names: queues defined in hand-written config
        return {q: QueueConfig(q) for q in names(raw, "queues", QUEUE_RE, prefix, fail)}
    if not isinstance(value, Mapping):
        raise fail(key, f"must be a list of names or a table of queues, got {value!r}")
    queues = {}
    for qname, qraw in value.items():
        qkey = f"{key}.{qname}"
        if not QUEUE_RE.fullmatch(qname) or not isinstance(qraw, Mapping):
            raise fail(qkey, f"must be a queue table with a safe name, got {qname!r}")
        no_unknown(qraw, {"members", "strategy", "timeout"}, qkey, fail)
        members = qraw.get("members", [])
        if not isinstance(members, list) or not all(
                isinstance(m, str) and DIAL_RE.fullmatch(m) for m in members):
            raise fail(f"{qkey}.members", f"must be a list of channels, got {members!r}")
        strategy = qraw.get("strategy", "leastrecent")
        if strategy not in QUEUE_STRATEGIES:
            raise fail(f"{qkey}.strategy", f"must be one of {QUEUE_STRATEGIES}, got {strategy!r}")
        queues[qname] = QueueConfig(qname, tuple(members), strategy,
                                    count_value(qraw, "timeout", 15, qkey, fail))
    return queues


def _check_rule_target(rule: str, target: str, targets: set[str], queues: set[str],
                       prefixes: list[str], prefix: str, fail: Fail) -> None:
    kind, sep, value = target.partition(":")
    where = join(prefix, "rules")
    if not sep and target not in targets:
        raise fail(where, f"rule {rule!r} routes to {target!r}, which is not in "
                   f"{join(prefix, 'targets')}")
    if kind == "queue" and value not in queues:
        raise fail(where, f"rule {rule!r} routes to {target!r}, which is not in "
                   f"{join(prefix, 'queues')}")
    if kind == "external" and not any(value.startswith(p) for p in prefixes):
        raise fail(where, f"rule {rule!r} routes to {target!r}, which matches none of "
                   f"{join(prefix, 'external_prefixes')}")


def _venue(tenant: str, context: str, raw: Any, key: str, targets: set[str],
           router_timeout: float, redirect_limit: int, fail: Fail) -> VenueConfig:
    if not CONTEXT_RE.fullmatch(context):
        raise fail(key, f"{context!r} is not a safe dialplan context name")
    if not isinstance(raw, Mapping):
        raise fail(key, "must be a table")
    no_unknown(raw, {"vts", "router_timeout", "default_targets", "redirect_limit", "driver"},
               key, fail)
    vts_name = raw.get("vts")
    if not isinstance(vts_name, str):
        raise fail(f"{key}.vts", f"must name a [vts.NAME] section, got {vts_name!r}")
    defaults = raw.get("default_targets", [])
    if not isinstance(defaults, list) or not all(isinstance(t, str) for t in defaults):
        raise fail(f"{key}.default_targets", f"must be a list of extensions, got {defaults!r}")
    outside = [t for t in defaults if t not in targets]
    if outside:
        raise fail(f"{key}.default_targets", f"{outside[0]!r} is not in the tenant's targets")
    return VenueConfig(
        context=context, tenant=tenant, vts=vts_name,
        router_timeout=positive(raw, "router_timeout", router_timeout, key, fail),
        default_targets=tuple(defaults),
        redirect_limit=count_value(raw, "redirect_limit", redirect_limit, key, fail),
        driver=_driver(raw, key, fail),
    )


def _driver(raw: Mapping[str, Any], key: str, fail: Fail) -> str:
    driver = raw.get("driver", DEFAULT_DRIVER)
    if driver not in DRIVERS:
        raise fail(join(key, "driver"), f"must be one of {', '.join(map(repr, DRIVERS))}, "
                   f"got {driver!r}")
    return str(driver)
