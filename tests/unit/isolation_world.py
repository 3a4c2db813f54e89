"""Generated multi-tenant worlds for the isolation properties (test_isolation_property.py).

A world is 2-4 tenants, each with venues, extensions, queues, external prefixes, agent
devices and routing rules, laid out on virtual transaction servers in several ways (one
VTS per tenant, one VTS for all, venues spread at random), and a few variants of the
bridge config for reloads (a subset of the tenants, another layout). Every variant is
built as the raw TOML-like dict an operator writes and goes through the real loader,
`ami_bridge.config.parse`, so the intermediary sees exactly what the daemon would.

Every name a tenant's config holds is made of *tokens*: words (`WORD_RE`) of letters
that are not hex digits followed by a number unique in the world (`t3`, `xt7`,
`90000012` for the digit-only external prefixes). A token can therefore never be part of
a call handle (hex), of the protocol's vocabulary (no digits) or of another token, and
"tenant B's data reached tenant A's VTS" becomes "a token owned by B is a word of a
message A's VTS received". `Tokens` hands them out and remembers who owns each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ami_bridge import config as config_mod
from ami_bridge.config import BridgeConfig

# Words as the leak check reads them: '-', '/', ':', '+', '.', quotes split words, so
# `t3-vn5` names tenant t3 and venue token vn5, `PJSIP/t3-gn9` the device token gn9.
WORD_RE = re.compile(r"[A-Za-z0-9_]+")
# Letters of token names: none of a-f, so no token can hide inside a hex call handle.
NON_HEX = "ghijklmnopqrstuvwxyz"
# The bridge's own defaults are short numbers (timeouts in ms, 0..600 s); external
# prefixes are eight digits starting with 9 and never collide with them.
PREFIX_BASE = 90_000_000
NOBODY = "(unknown venue)"  # owner of caller data of calls into no tenant's venue
LAYOUTS = ("own", "shared", "spread")
CONFIG_PATH = Path("isolation.toml")


def words(text: str) -> set[str]:
    return set(WORD_RE.findall(text))


class Tokens:
    """Fresh tokens and their owners; the counter makes every token unique."""

    def __init__(self, start: int = 0) -> None:
        self.counter = start
        self.owners: dict[str, set[str]] = {}  # token -> tenants whose data it is

    def fresh(self, letters: str, owner: str | None = None) -> str:
        self.counter += 1
        token = f"{letters}{self.counter}"
        self.owners[token] = set()
        if owner is not None:
            self.own(owner, [token])
        return token

    def number(self, owner: str) -> str:
        """A digit-only token (external prefixes), eight digits starting with 9."""
        self.counter += 1
        token = str(PREFIX_BASE + self.counter)
        self.owners[token] = {owner}
        return token

    def register(self, token: str, owner: str) -> str:
        self.owners.setdefault(token, set()).add(owner)
        return token

    def own(self, owner: str, values: Iterable[str]) -> None:
        """`owner`'s data now includes the tokens among the words of `values`."""
        for value in values:
            for word in words(value):
                if word in self.owners:
                    self.owners[word].add(owner)

    def owned_by(self, tenant: str) -> set[str]:
        return {t for t, owners in self.owners.items() if tenant in owners}


@dataclass
class TenantSpec:
    name: str
    venues: list[str]
    extensions: dict[str, str]  # extension -> device
    targets: list[str]  # extra extensions (hand-written dialplan)
    queues: list[str]
    queue_members: dict[str, list[str]]
    prefixes: list[str]  # "+9000…"
    devices: list[str]  # agent devices besides the extensions'
    externals: list[str] = field(default_factory=list)  # numbers inside the prefixes
    raw: dict[str, Any] = field(default_factory=dict)  # without the venues
    venue_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def all_targets(self) -> list[str]:
        return [*self.extensions, *self.targets]

    @property
    def all_devices(self) -> list[str]:
        members = [d for ms in self.queue_members.values() for d in ms]
        return sorted({*self.extensions.values(), *self.devices, *members})


@dataclass
class World:
    tenants: list[TenantSpec]
    configs: list[BridgeConfig]  # [0] is the initial one; the others are for reloads
    layouts: list[str]
    tokens: Tokens
    uniqueids: list[str]  # unique ids that calls of several tenants share

    def __repr__(self) -> str:
        """Short enough to read in a failing example: each config as the operator wrote it."""
        def one(config: BridgeConfig) -> str:
            vts = {n: list(v.tenants) for n, v in config.vts.items()}
            venues = {c: (v.vts, v.router_timeout, list(v.default_targets), v.redirect_limit)
                      for c, v in config.venues.items()}
            return f"vts={vts} venues={venues}"
        bridge = self.configs[0]
        return (f"World(max_pending_per_vts={bridge.max_pending_per_vts}, "
                f"redirect_limit={bridge.redirect_limit}, "
                f"max_route_requests={bridge.max_route_requests}, "
                f"tenants={ {t.name: t.raw for t in self.tenants} }, "
                f"configs={[one(c) for c in self.configs]}, uniqueids={self.uniqueids})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints a failing example with this

    def spec(self, name: str) -> TenantSpec:
        return next(t for t in self.tenants if t.name == name)

    def venue_owner(self, venue: str) -> str | None:
        return next((t.name for t in self.tenants if venue in t.venues), None)

    def device_owner(self, device: str) -> str | None:
        return next((t.name for t in self.tenants if device in t.all_devices), None)

    @property
    def all_venues(self) -> list[str]:
        return [v for t in self.tenants for v in t.venues]

    @property
    def all_devices(self) -> list[str]:
        return [d for t in self.tenants for d in t.all_devices]


# A tenant name's letters (a counter follows): valid per namespace.TENANT_NAME_RE.
tenant_letters = st.builds(lambda first, rest: first + rest, st.sampled_from(NON_HEX),
                           st.text(alphabet=NON_HEX + "_", max_size=5))


@st.composite
def tenant_specs(draw: st.DrawFn, tokens: Tokens, letters: str) -> TenantSpec:
    name = tokens.fresh(letters)
    tokens.own(name, [name])
    own = name

    def device() -> str:
        return f"PJSIP/{name}-{tokens.fresh('gn', own)}"

    venues = [f"{name}-{tokens.fresh('vn', own)}" for _ in range(draw(st.integers(1, 3)))]
    extensions = {tokens.fresh("xt", own): device() for _ in range(draw(st.integers(0, 3)))}
    targets = [tokens.fresh("tg", own) for _ in range(draw(st.integers(0 if extensions else 1,
                                                                         2)))]
    queues = [tokens.fresh("qu", own) for _ in range(draw(st.integers(0, 2)))]
    members = {q: [device() for _ in range(draw(st.integers(0, 2)))] for q in queues}
    prefixes = [f"+{tokens.number(own)}" for _ in range(draw(st.integers(0, 2)))]
    devices = [device() for _ in range(draw(st.integers(0, 2)))]
    spec = TenantSpec(name=name, venues=venues, extensions=extensions, targets=targets,
                      queues=queues, queue_members=members, prefixes=prefixes,
                      devices=devices)
    # External numbers inside the prefixes: each its own (longer) digit-only token.
    spec.externals = [f"+{tokens.register(p[1:] + n, own)}" for p in prefixes
                      for n in ("1", "42")]
    raw: dict[str, Any] = {"targets": targets, "external_prefixes": prefixes,
                           "moh_class": tokens.fresh("mh", own), "devices": devices}
    if extensions:
        raw["extensions"] = extensions
        raw["operator"] = next(iter(extensions))
    if queues and draw(st.booleans()):
        raw["queues"] = {q: {"members": ms} for q, ms in members.items()}
    elif queues:  # just names: the members are in hand-written config, no device of ours
        raw["queues"] = list(queues)
        members.clear()
    prompts = draw(st.sampled_from(["", "tenants/{t}", "{t}", "{t}/{p}"]))
    if prompts:
        raw["prompts"] = prompts.format(t=name, p=tokens.fresh("pd", own))
    raw["rules"] = [draw(rule_shapes(tokens, spec)) for _ in range(draw(st.integers(0, 4)))]
    spec.raw = raw
    return spec


@st.composite
def rule_shapes(draw: st.DrawFn, tokens: Tokens, spec: TenantSpec) -> dict[str, Any]:
    """One rule in the vocabulary of tenants/routing.py, naming only the tenant's own."""
    own = spec.name
    rule: dict[str, Any] = {"name": tokens.fresh("rl", own)}
    shape = draw(st.sampled_from(["route", "reject", "treatment", "default"]))
    if shape == "route":
        choices = [*spec.all_targets, *(f"queue:{q}" for q in spec.queues),
                   *(f"external:{n}" for n in spec.externals)]
        targets = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3,
                                unique=True))
        tokens.own(own, targets)
        rule["targets"] = targets
        rule["strategy"] = draw(st.sampled_from(["first", "round_robin", "longest_idle"]))
        if draw(st.booleans()):
            rule["overflow_after"] = draw(st.integers(1, 30))
    elif shape == "reject":
        rule["action"] = "reject"
        rule["cause"] = draw(st.sampled_from(["busy", "congestion"]))
    elif shape == "treatment":
        rule["action"] = "treatment"
        if draw(st.booleans()):
            rule["moh"] = True
        else:
            rule["prompt"] = tokens.fresh("pr", own)
            rule["collect_digits"] = draw(st.integers(0, 4))
    else:
        rule["action"] = "default"
    condition = draw(st.sampled_from(["", "dnis", "ani_prefix", "hours", "withheld",
                                      "digits", "agents"]))
    if condition == "dnis":
        rule["dnis"] = draw(st.sampled_from(spec.all_targets))
    elif condition == "ani_prefix":
        rule["ani_prefix"] = [tokens.fresh("an", own)]
    elif condition == "hours":
        rule["hours"], rule["days"] = "08:00-18:00", ["mon", "tue", "wed"]
    elif condition == "withheld":
        rule["ani_withheld"] = True
    elif condition == "digits":
        rule["digits"] = ["1", "2"]
    elif condition == "agents" and shape == "route":
        rule["agents_available"] = draw(st.booleans())
    return rule


def assign(draw: st.DrawFn, layout: str, specs: list[TenantSpec],
           pool: list[str]) -> dict[str, str]:
    """Venue -> VTS name for one layout."""
    if layout == "own":
        return {v: pool[i] for i, t in enumerate(specs) for v in t.venues}
    if layout == "shared":
        return {v: pool[0] for t in specs for v in t.venues}
    return {v: draw(st.sampled_from(pool[:len(specs)])) for t in specs for v in t.venues}


def bridge_raw(specs: list[TenantSpec], vts_of: dict[str, str],
               bridge: dict[str, Any]) -> dict[str, Any]:
    tenants = {}
    for spec in specs:
        raw = dict(spec.raw)
        raw["venues"] = {v: {"vts": vts_of[v], **spec.venue_options.get(v, {})}
                         for v in spec.venues}
        tenants[spec.name] = raw
    # Only the VTS some chosen venue maps to: an idle [vts.X] is a config error.
    used = sorted({vts_of[v] for spec in specs for v in spec.venues})
    return {"bridge": bridge, "vts": {name: {} for name in used}, "tenants": tenants}


@st.composite
def worlds(draw: st.DrawFn) -> World:
    tokens = Tokens()
    count = draw(st.integers(2, 4))
    specs = [draw(tenant_specs(tokens, draw(tenant_letters))) for _ in range(count)]
    for spec in specs:  # venue options are the tenant's own
        for venue in spec.venues:
            options: dict[str, Any] = {}
            if draw(st.booleans()):
                options["router_timeout"] = draw(st.sampled_from([0.1, 0.5, 3.0]))
            if draw(st.booleans()):
                options["default_targets"] = draw(st.lists(
                    st.sampled_from(spec.all_targets), max_size=2, unique=True))
            if draw(st.booleans()):
                options["redirect_limit"] = draw(st.integers(1, 3))
            spec.venue_options[venue] = options
    pool = [tokens.fresh("vs") for _ in range(count)]  # VTS names belong to no tenant
    bridge = {"router_timeout": draw(st.sampled_from([0.5, 2.0])),
              "max_pending_per_vts": draw(st.sampled_from([1, 2, 4, 100])),
              "redirect_limit": draw(st.integers(1, 4)),
              "max_route_requests": draw(st.integers(1, 8))}
    layouts = [draw(st.sampled_from(LAYOUTS)) for _ in range(draw(st.integers(1, 3)))]
    configs = []
    for i, layout in enumerate(layouts):
        chosen = specs if i == 0 else draw(st.lists(
            st.sampled_from(specs), min_size=1, max_size=count, unique_by=lambda s: s.name))
        vts_of = assign(draw, layout, specs, pool)
        raw = bridge_raw(chosen, vts_of, bridge)
        configs.append(config_mod.parse(raw, path=CONFIG_PATH))
    uniqueids = [tokens.fresh("uq") for _ in range(3)]  # owned by whichever call uses one
    return World(tenants=specs, configs=configs, layouts=layouts, tokens=tokens,
                 uniqueids=uniqueids)
