"""Call cases from the tenant files: per venue, one call per reachable rule and where it
must ring.

Contract. `derive(tenants, venues, entries, now)` is pure (the clock is passed in). For
each tenant's venue it walks the tenant's routing protocol in order and, for each rule,
looks for a caller number (ANI) and dialled number (DNIS) that the rule matches and no
earlier rule does, preferring one that would ring elsewhere without the rule:
candidates come from the rules' own conditions (their numbers and prefixes, a withheld
caller) plus neutral numbers that match no condition; matching is
the tenant's own code (`ami_bridge.tenants.routing.matches`, then `evaluate` on a copy
to confirm which rule wins), in the tenant's timezone at `now`. The case's expected
destination is what the rule's target dials (`[extensions]`, a queue's members, the
outbound route), the venue's default route for `action = "default"` (its first
`default_targets`, else the tenant's operator extension, as the rendered venue does),
or a rejection. A rule that no call can reach now (closed time window, holiday, digits
from a treatment, every matching call taken by an earlier rule, a caller number the
venue's entry cannot send) or whose outcome depends on live state (agent state) or on
answering the call (treatments) is listed as skipped with why; round robin and split
expect any of their targets. Personal venues (users' own rules, not in the tenant files)
and venues without an entry are skipped whole.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ami_bridge.calltest.entries import Entry, sip_user_ok
from ami_bridge.namespace import KIND_EXTENSION, KIND_EXTERNAL, KIND_QUEUE
from ami_bridge.tenant_config import TenantConfig, VenueConfig
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.routing import (
    CallInfo,
    Decision,
    RoutingProtocol,
    Rule,
    matches,
    parse_protocol,
)

# Numbers that match no rule condition are picked from these, first fit. Digits only (the
# venue and any carrier take them); several lengths so a rule set with many prefixes still
# leaves one free.
NEUTRAL_DNIS = ("5000", "7000", "8000", "6000", "4000", "3000", "2000", "9000", "55", "5")
NEUTRAL_ANI = ("+15550100", "+4455501000", "5550100", "+33155501000", "0555010000")
# What a withheld caller sends (routing.WITHHELD_ANI holds the spellings it recognises).
WITHHELD = "anonymous"
# Appended to a prefix condition's value to make a whole number from it.
PREFIX_FILL_DNIS = "00"
PREFIX_FILL_ANI = "5550100"
# Candidate calls looked at per rule when choosing one that tells the rule apart.
MAX_CANDIDATES = 200
REJECT = "reject:"  # expected/actual destination of a rejected call: "reject:busy"
NO_RULE = "(no rule matched)"

SkipFn = Callable[[str, str], None]  # (rule, why)


@dataclass(frozen=True)
class Case:
    """One call to place: into `venue`, from `ani` to `dnis`; it must reach one of
    `expected` (devices such as "PJSIP/acme-agent", or "reject:busy")."""

    tenant: str
    venue: str
    rule: str
    dnis: str
    ani: str
    expected: frozenset[str]
    why: str  # the path from rule to device, for the report


@dataclass(frozen=True)
class Skipped:
    tenant: str
    venue: str
    rule: str  # "" : the whole venue
    why: str


@dataclass(frozen=True)
class Plan:
    cases: tuple[Case, ...]
    skipped: tuple[Skipped, ...]


def derive(tenants: Mapping[str, TenantConfig], venues: Iterable[VenueConfig],
           entries: Mapping[str, Entry], now: dt.datetime) -> Plan:
    """Every case of every venue, in config order (see the module docstring)."""
    cases: list[Case] = []
    skipped: list[Skipped] = []
    for venue in venues:
        tenant = tenants[venue.tenant]
        entry = entries.get(venue.context)
        if venue.personal:
            skipped.append(Skipped(tenant.name, venue.context, "", "personal venue: each "
                                   "user's own rules decide (not in the tenant file)"))
        elif entry is None:
            skipped.append(Skipped(tenant.name, venue.context, "", "no --entry says how a "
                                   "call gets into this venue"))
        else:
            found, missed = derive_venue(tenant, venue, entry, now)
            cases += found
            skipped += missed
    return Plan(tuple(cases), tuple(skipped))


def derive_venue(tenant: TenantConfig, venue: VenueConfig, entry: Entry,
                 now: dt.datetime) -> tuple[list[Case], list[Skipped]]:
    protocol = parse_protocol(tenant.rules, timezone=tenant.timezone, holidays=tenant.holidays)
    local = now.astimezone(protocol.timezone)
    rules = protocol.rules
    dnis_pool = _dnis_candidates(rules)
    ani_pool = [entry.fixed_ani] if entry.fixed_ani is not None else _ani_candidates(rules)
    cases: list[Case] = []
    skipped: list[Skipped] = []

    def skip(rule: str, why: str) -> None:
        skipped.append(Skipped(tenant.name, venue.context, rule, why))

    for index, rule in enumerate(rules):
        why = _unplaceable(rule)
        if why:
            skip(rule.name, why)
            continue
        calls = list(itertools.islice(_calls(
            rules[:index], rule, protocol, local, _own_first(_dnis_of(rule), dnis_pool),
            ani_pool if entry.fixed_ani is not None
            else _own_first(_ani_of(rule), ani_pool)), MAX_CANDIDATES))
        if not calls:
            skip(rule.name, _unreachable(rules[:index], rule, protocol, local, entry))
            continue
        call = _telling(calls, index, protocol, now, tenant, venue)
        _add(cases, skip, tenant, venue, rule.name, call,
             _decide(protocol, call, now), rule)
    # Calls that no rule takes get the implicit default; say so if any exists.
    leftover = next(_calls(rules, None, protocol, local, dnis_pool, ani_pool), None)
    if leftover is not None:
        _add(cases, skip, tenant, venue, NO_RULE, leftover, _decide(protocol, leftover, now),
             None)
    return cases, skipped


def _add(cases: list[Case], skip: SkipFn, tenant: TenantConfig, venue: VenueConfig,
         name: str, call: CallInfo, decision: Decision, rule: Rule | None) -> None:
    if decision.rule != name:  # matches() and evaluate() disagree: trust evaluate
        skip(name, f"the tenant's protocol sends DNIS {call.dnis} / ANI {call.ani} to rule "
             f"{decision.rule!r}")
        return
    try:
        expected, why = expectation(tenant, venue, decision, rule)
    except Unknown as exc:
        skip(name, str(exc))
        return
    cases.append(Case(tenant.name, venue.context, name, call.dnis, call.ani, expected, why))


class Unknown(ValueError):
    """The expected destination cannot be known from the tenant file; says why."""


def expectation(tenant: TenantConfig, venue: VenueConfig, decision: Decision,
                rule: Rule | None) -> tuple[frozenset[str], str]:
    """Where a decision must ring: devices (or "reject:CAUSE"), and the path as text."""
    if decision.action == "reject":
        return frozenset({REJECT + decision.cause}), f"reject ({decision.cause})"
    if decision.action == "default":
        extension = venue.default_targets[0] if venue.default_targets else tenant.operator
        devices, path = _devices(tenant, Target(KIND_EXTENSION, extension))
        source = "default_targets" if venue.default_targets else "operator"
        return devices, f"default -> {source} {path}"
    if decision.action != "route" or decision.target is None:
        raise Unknown(f"action {decision.action!r}: calltest does not answer calls")
    targets: Sequence[Target] = (decision.target,)
    if rule is not None and rule.strategy in ("round_robin", "split", "longest_idle") \
            and not rule.overflow_after:
        targets = rule.route_targets  # which one depends on state: any of them
    found: set[str] = set()
    paths = []
    for target in targets:
        devices, path = _devices(tenant, target)
        found |= devices
        paths.append(path)
    prefix = f"{rule.strategy}: any of " if len(targets) > 1 and rule is not None else ""
    return frozenset(found), prefix + " | ".join(paths)


def _devices(tenant: TenantConfig, target: Target) -> tuple[frozenset[str], str]:
    if target.kind == KIND_EXTENSION:
        dial = tenant.extensions.get(target.value)
        if dial is None:
            raise Unknown(f"extension {target.value} is hand-written dialplan (not in "
                          "[extensions]): its device is unknown")
        return frozenset({device_of(dial)}), f"{target.value} -> {dial}"
    if target.kind == KIND_QUEUE:
        queue = tenant.queue_configs.get(target.value)
        if queue is None or not queue.members:
            raise Unknown(f"queue {target.value} has no members in the tenant file")
        members = frozenset(device_of(m) for m in queue.members)
        return members, f"queue {target.value} -> {', '.join(sorted(members))}"
    if target.kind == KIND_EXTERNAL:
        if not tenant.outbound:
            raise Unknown(f"external {target.value}: the tenant has no outbound route")
        dial = tenant.outbound.replace("{number}", target.value)
        return frozenset({device_of(dial)}), f"{target.value} -> {dial}"
    raise Unknown(f"target {target} of kind {target.kind!r}")


def device_of(dial: str) -> str:
    """The device a dial string rings, as AMI's channel names show it: "PJSIP/x@trunk"
    rings on a channel of endpoint `trunk` ("PJSIP/trunk-0000002a")."""
    tech, _, resource = dial.partition("/")
    if "@" in resource and tech != "Local":
        resource = resource.rsplit("@", 1)[1]
    return f"{tech}/{resource}"


# -- finding a call for a rule ------------------------------------------------------------

def _unplaceable(rule: Rule) -> str:
    if rule.digits:
        return "needs digits a caller keys in during a treatment"
    if rule.action == "treatment":
        return "treatment (prompt or music, the call stays pending): calltest does not " \
               "answer calls"
    if rule.agents_available is not None:
        return "depends on live agent state (agents_available)"
    if rule.strategy == "longest_idle" and rule.action == "route":
        return "depends on live agent state (longest_idle)"
    return ""


def _calls(earlier: Sequence[Rule], rule: Rule | None, protocol: RoutingProtocol,
           local: dt.datetime, dnis_pool: Sequence[str],
           ani_pool: Sequence[str]) -> Iterator[CallInfo]:
    """The candidate calls that `rule` matches (None: that no rule matches) and no
    earlier rule does, in pool order."""
    for dnis in dnis_pool:
        for ani in ani_pool:
            call = CallInfo(ani=ani, dnis=dnis)
            if rule is not None and not matches(rule, call, local, protocol.holidays):
                continue
            if any(matches(r, call, local, protocol.holidays) for r in earlier):
                continue
            yield call


def _telling(calls: Sequence[CallInfo], index: int, protocol: RoutingProtocol,
             now: dt.datetime, tenant: TenantConfig, venue: VenueConfig) -> CallInfo:
    """The first call that would ring elsewhere if rule `index` were not there, so that
    the case fails when the rule is not in force (a withheld caller dialling the sales
    number, rather than one dialling a number that defaults to the same operator
    anyway); the first call when none would."""
    without = dataclasses.replace(copy.deepcopy(protocol),
                                  rules=protocol.rules[:index] + protocol.rules[index + 1:])
    for call in calls:
        if _outcome(protocol, call, now, tenant, venue) \
                != _outcome(without, call, now, tenant, venue):
            return call
    return calls[0]


def _outcome(protocol: RoutingProtocol, call: CallInfo, now: dt.datetime,
             tenant: TenantConfig, venue: VenueConfig) -> frozenset[str] | None:
    decision = _decide(protocol, call, now)
    rule = next((r for r in protocol.rules if r.name == decision.rule), None)
    try:
        return expectation(tenant, venue, decision, rule)[0]
    except Unknown:
        return None


def _unreachable(earlier: Sequence[Rule], rule: Rule, protocol: RoutingProtocol,
                 local: dt.datetime, entry: Entry) -> str:
    timeless = dataclasses.replace(rule, dnis=(), dnis_prefix=(), ani=(), ani_prefix=(),
                                   ani_withheld=None)
    if not matches(timeless, CallInfo(ani="", dnis=""), local, protocol.holidays):
        return (f"not now: its days/hours/holiday condition does not hold at "
                f"{local:%a %H:%M} {protocol.timezone.key}")
    if entry.fixed_ani is not None and (rule.ani or rule.ani_prefix
                                        or rule.ani_withheld is not None):
        return (f"needs its own caller number, but calls into {entry.venue} all come from "
                f"{entry.fixed_ani!r} (see --pai in docs/calltest.md)")
    names = ", ".join(repr(r.name) for r in earlier) or "none"
    return f"every call it matches is taken by an earlier rule ({names})"


def _decide(protocol: RoutingProtocol, call: CallInfo, now: dt.datetime) -> Decision:
    # A copy: evaluate() advances round-robin cursors, and derivation must not.
    return copy.deepcopy(protocol).evaluate(call, now, random.Random(0))


def _own_first(own: Iterable[str], pool: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*own, *pool]))


def _dnis_of(rule: Rule) -> list[str]:
    return [d for d in (*rule.dnis, *(p + PREFIX_FILL_DNIS for p in rule.dnis_prefix))
            if sip_user_ok(d)]


def _ani_of(rule: Rule) -> list[str]:
    own = [*rule.ani, *(p + PREFIX_FILL_ANI for p in rule.ani_prefix)]
    if rule.ani_withheld:
        own.append(WITHHELD)
    return [a for a in own if sip_user_ok(a)]


def _dnis_candidates(rules: Sequence[Rule]) -> list[str]:
    own = [d for rule in rules for d in _dnis_of(rule)]
    return list(dict.fromkeys([*NEUTRAL_DNIS, *own]))


def _ani_candidates(rules: Sequence[Rule]) -> list[str]:
    own = [a for rule in rules for a in _ani_of(rule)]
    return list(dict.fromkeys([*NEUTRAL_ANI, *own, WITHHELD]))
