"""Routing protocols: a tenant's ordered rules turning a route request into a disposition.

Pure code: no I/O, no clock of its own (`evaluate` takes `now`), no randomness of its
own (percentage split takes an injected `random.Random`). The bridge uses
`parse_protocol` to validate a tenant's rules when it loads its config (so errors name
the config file and key); the VTS runtime parses the same data again and evaluates it.

Rules are tried in order and the first whose every condition holds wins. Conditions:
  dnis / dnis_prefix         dialled number, exact or by prefix (string or list)
  ani / ani_prefix           caller number, exact or by prefix
  ani_withheld = true|false  caller id withheld, anonymous or unknown
  days = ["mon", ...]        weekday in the tenant's timezone
  hours = "HH:MM-HH:MM"      time window in the tenant's timezone; a window whose end is
                             before its start runs across midnight (22:00-06:00); the
                             days condition then applies to the day the window opened
  holiday = true|false       today is (not) in the tenant's holiday calendar
  digits                     digits the caller entered during a treatment
  agents_available = true|false  at least one / none of the rule's targets is an
                             available agent (device idle and not paused, from the
                             bridge's AMI agent state; a target without known state
                             counts as available, so routing works without AMI)
Actions: route (targets with strategy first | round_robin | split), reject (cause busy |
congestion), default (the venue's default route), treatment (play `prompt`, optionally
collecting `collect_digits` digits within `timeout_ms`, or `moh = true`; the call stays
pending and the protocol is evaluated again with the digits; a treatment rule applies at
most once per call). A target is `KIND:VALUE` (`ami_bridge.tenants.messages.Target`, the
spelling of the wire protocol too): an extension ("extension:1001", or bare "1001"), a
queue ("queue:sales") or an external number ("external:+4930123456").
`overflow_after = N` dials each target for N seconds; when the call comes back because
that target did not answer or was busy, the rule goes on with the next target in its
list, and past the last one it no longer matches, so a later rule (a default or
reject) decides.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ami_bridge.namespace import (
    KIND_EXTENSION,
    MAX_COLLECT_DIGITS,
    PROMPT_RE,
    REJECT_CAUSES,
    TARGET_KINDS,
)
from ami_bridge.tenants.messages import Target

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STRATEGIES = ("first", "round_robin", "split", "longest_idle")
ACTIONS = ("route", "reject", "default", "treatment")
# DIALSTATUS values after which an overflow rule moves on to its next target.
OVERFLOW_STATUSES = frozenset({"NOANSWER", "BUSY", "CHANUNAVAIL", "CONGESTION"})
_HOURS_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
# Caller-id numbers Asterisk and carriers use for "withheld".
WITHHELD_ANI = frozenset({"", "anonymous", "unknown", "restricted", "private", "withheld"})
_CONDITION_KEYS = frozenset(
    {"dnis", "dnis_prefix", "ani", "ani_prefix", "ani_withheld", "days", "hours", "holiday",
     "digits", "agents_available"}
)
_RULE_KEYS = _CONDITION_KEYS | {"name", "action", "targets", "strategy", "weights", "cause",
                                "prompt", "moh", "collect_digits", "timeout_ms",
                                "overflow_after"}


class RuleError(ValueError):
    """A routing rule is invalid; the message names the rule and the key."""


@dataclass(frozen=True)
class CallInfo:
    """What a routing protocol may look at: the route request's caller data."""

    ani: str
    dnis: str
    digits: str = ""
    previous_target: Target | None = None  # what the call was last routed to
    previous_status: str = ""  # Asterisk's DIALSTATUS for it
    treated: bool = False  # a treatment already ran for this call


@dataclass(frozen=True)
class AgentView:
    """What the VTS knows of one target's agent: from the bridge's `agent_state`."""

    available: bool
    idle_since: float | None = None  # epoch seconds of the last call's end; None: never


Agents = Mapping[str, AgentView]  # extension -> agent state
_NO_AGENTS: Agents = {}


@dataclass(frozen=True)
class Decision:
    action: str
    target: Target | None = None
    cause: str = ""
    rule: str = ""
    dial_timeout: int = 0
    prompt: str = ""
    moh: bool = False
    collect_digits: int = 0
    timeout_ms: int = 0


@dataclass(frozen=True)
class Rule:
    name: str
    action: str
    dnis: tuple[str, ...] = ()
    dnis_prefix: tuple[str, ...] = ()
    ani: tuple[str, ...] = ()
    ani_prefix: tuple[str, ...] = ()
    ani_withheld: bool | None = None
    days: frozenset[int] | None = None
    hours: tuple[int, int] | None = None  # minutes since midnight, [start, end)
    holiday: bool | None = None
    digits: tuple[str, ...] = ()
    agents_available: bool | None = None
    targets: tuple[str, ...] = ()  # as written (the config loader checks them)
    route_targets: tuple[Target, ...] = ()  # the same, parsed
    strategy: str = "first"
    weights: tuple[int, ...] = ()
    cause: str = "busy"
    prompt: str = ""
    moh: bool = False
    collect_digits: int = 0
    timeout_ms: int = 5000
    overflow_after: int = 0


@dataclass
class RoutingProtocol:
    """A tenant's rules plus the mutable selection state (round-robin cursors: rule name
    -> the index of the target the rule gives next). `cursors_changed` is set whenever a
    cursor moves, for the VTS to send them as its saved state (protocol 2.2) and clear
    it; `restore_cursors` takes them back (a restarted VTS resumes where it was)."""

    rules: tuple[Rule, ...]
    timezone: ZoneInfo
    holidays: frozenset[dt.date] = frozenset()
    _cursors: dict[str, int] = field(default_factory=dict)
    cursors_changed: bool = False

    def cursors(self) -> dict[str, int]:
        """A copy of the round-robin cursors (only rules that have given a call)."""
        return dict(self._cursors)

    def restore_cursors(self, saved: object) -> int:
        """Take cursors saved earlier (rule name -> index), perhaps by a VTS that had
        other rules: only names of this protocol's round-robin rules count, an index is
        taken modulo the rule's targets now, anything else is ignored. Returns how many
        were taken. Does not set `cursors_changed` (they are what is saved already)."""
        if not isinstance(saved, Mapping):
            return 0
        taken = 0
        for rule in self.rules:
            index = saved.get(rule.name)
            if (rule.strategy != "round_robin" or not rule.route_targets
                    or not isinstance(index, int) or isinstance(index, bool) or index < 0):
                continue
            self._cursors[rule.name] = index % len(rule.route_targets)
            taken += 1
        return taken

    def evaluate(self, call: CallInfo, now: dt.datetime, rng: random.Random,
                 agents: Agents = _NO_AGENTS) -> Decision:
        local = now.astimezone(self.timezone)
        for rule in self.rules:
            if rule.action == "treatment" and call.treated:
                continue
            if not matches(rule, call, local, self.holidays):
                continue
            free = [t for t in rule.route_targets if _available(t, agents)]
            if rule.agents_available is not None and bool(free) != rule.agents_available:
                continue
            if rule.strategy == "longest_idle" and rule.action == "route":
                if not free:
                    continue  # nobody to give the call to: later rules decide
                target = min(free, key=lambda t: (_idle_since(t, agents),
                                                  rule.route_targets.index(t)))
                return Decision("route", target=target, rule=rule.name,
                                dial_timeout=rule.overflow_after)
            if rule.overflow_after and call.previous_target in rule.route_targets:
                if call.previous_status not in OVERFLOW_STATUSES:
                    return Decision("default", rule=rule.name)  # answered elsewhere / odd
                index = rule.route_targets.index(call.previous_target) + 1
                if index >= len(rule.route_targets):
                    continue  # every target overflowed: later rules decide
                return Decision("route", target=rule.route_targets[index], rule=rule.name,
                                dial_timeout=rule.overflow_after)
            return self._decide(rule, rng)
        return Decision("default", rule="(no rule matched)")

    def _decide(self, rule: Rule, rng: random.Random) -> Decision:
        if rule.action == "treatment":
            return Decision("treatment", rule=rule.name, prompt=rule.prompt, moh=rule.moh,
                            collect_digits=rule.collect_digits, timeout_ms=rule.timeout_ms)
        if rule.action != "route":
            return Decision(rule.action, cause=rule.cause if rule.action == "reject" else "",
                            rule=rule.name)
        if rule.overflow_after:
            return Decision("route", target=rule.route_targets[0], rule=rule.name,
                            dial_timeout=rule.overflow_after)
        targets = rule.route_targets
        if rule.strategy == "round_robin":
            index = self._cursors.get(rule.name, 0)
            self._cursors[rule.name] = (index + 1) % len(targets)
            self.cursors_changed = True
            target = targets[index]
        elif rule.strategy == "split":
            target = rng.choices(targets, weights=rule.weights)[0]
        else:
            target = targets[0]
        return Decision("route", target=target, rule=rule.name)


def _agent(target: Target, agents: Agents) -> AgentView | None:
    """Agent state is known for extensions only (the `extensions` map of `hello`)."""
    return agents.get(target.value) if target.kind == KIND_EXTENSION else None


def _available(target: Target, agents: Agents) -> bool:
    view = _agent(target, agents)
    return view is None or view.available


def _idle_since(target: Target, agents: Agents) -> float:
    view = _agent(target, agents)
    return view.idle_since or 0.0 if view is not None else 0.0


def matches(rule: Rule, call: CallInfo, local: dt.datetime, holidays: frozenset[dt.date]) -> bool:
    if rule.dnis and call.dnis not in rule.dnis:
        return False
    if rule.dnis_prefix and not call.dnis.startswith(rule.dnis_prefix):
        return False
    if rule.ani and call.ani not in rule.ani:
        return False
    if rule.ani_prefix and not call.ani.startswith(rule.ani_prefix):
        return False
    if rule.ani_withheld is not None and is_withheld(call.ani) != rule.ani_withheld:
        return False
    if rule.digits and call.digits not in rule.digits:
        return False
    if rule.holiday is not None and (local.date() in holidays) != rule.holiday:
        return False
    return _time_matches(rule, local)


def is_withheld(ani: str) -> bool:
    return ani.strip().lower() in WITHHELD_ANI


def _time_matches(rule: Rule, local: dt.datetime) -> bool:
    minute = local.hour * 60 + local.minute
    opened_on = local.weekday()
    if rule.hours is not None:
        start, end = rule.hours
        if start <= end:
            if not start <= minute < end:
                return False
        elif minute >= start:
            pass  # evening part of a window across midnight: opened today
        elif minute < end:
            opened_on = (opened_on - 1) % 7  # morning part: the window opened yesterday
        else:
            return False
    return rule.days is None or opened_on in rule.days


# -- parsing ----------------------------------------------------------------------------

def parse_protocol(
    rules: Sequence[Mapping[str, Any]],
    *,
    timezone: str,
    holidays: Sequence[str] = (),
    where: str = "rules",
) -> RoutingProtocol:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(f"timezone: unknown timezone {timezone!r}") from None
    days: set[dt.date] = set()
    if not isinstance(holidays, Sequence) or isinstance(holidays, str):
        raise RuleError(f"holidays: must be a list of ISO dates (YYYY-MM-DD), got {holidays!r}")
    for i, text in enumerate(holidays):
        try:
            days.add(dt.date.fromisoformat(str(text)))
        except ValueError:
            raise RuleError(f"holidays[{i}]: not an ISO date (YYYY-MM-DD): {text!r}") from None
    if not isinstance(rules, Sequence) or isinstance(rules, str):
        raise RuleError(f"{where}: must be a list of rule tables")
    parsed = tuple(parse_rule(raw, where=f"{where}[{i}]") for i, raw in enumerate(rules))
    seen: dict[str, int] = {}
    for i, rule in enumerate(parsed):
        if rule.name in seen:
            raise RuleError(f"{where}[{i}].name: rule name {rule.name!r} is already used by "
                            f"{where}[{seen[rule.name]}]")
        seen[rule.name] = i
    return RoutingProtocol(rules=parsed, timezone=zone, holidays=frozenset(days))


def parse_rule(raw: Mapping[str, Any], *, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: a rule must be a table, got {raw!r}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise RuleError(f"{where}: unknown key {unknown[0]!r}")
    name = raw.get("name", where)
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}.name: must be a non-empty string, got {name!r}")
    action = raw.get("action", "route")
    if action not in ACTIONS:
        raise RuleError(f"{where}.action: must be one of {ACTIONS}, got {action!r}")
    targets = _strings(raw, "targets", where)
    route_targets = []
    for target in targets:
        try:
            route_targets.append(Target.parse(target, bare=KIND_EXTENSION))
        except ValueError:
            raise RuleError(f"{where}.targets: {target!r} is not an extension, "
                            "queue:NAME or external:+NUMBER (KIND:VALUE with KIND one of "
                            f"{', '.join(TARGET_KINDS)})") from None
    if action == "route" and not targets:
        raise RuleError(f"{where}.targets: a route rule needs at least one target")
    strategy = raw.get("strategy", "first")
    if strategy not in STRATEGIES:
        raise RuleError(f"{where}.strategy: must be one of {STRATEGIES}, got {strategy!r}")
    raw_weights = raw.get("weights", ())
    if not isinstance(raw_weights, Sequence) or isinstance(raw_weights, str):
        raise RuleError(f"{where}.weights: must be a list of integers, got {raw_weights!r}")
    weights = tuple(raw_weights)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in weights):
        raise RuleError(f"{where}.weights: must be non-negative integers, got {list(weights)!r}")
    if strategy == "split" and (len(weights) != len(targets) or sum(weights) == 0):
        raise RuleError(f"{where}.weights: split needs one non-negative integer per target, "
                        f"not all zero; got {list(weights)!r}")
    cause = raw.get("cause", "busy")
    if cause not in REJECT_CAUSES:
        raise RuleError(f"{where}.cause: must be one of {REJECT_CAUSES}, got {cause!r}")
    prompt = raw.get("prompt", "")
    moh = _optional_bool(raw, "moh", where) or False
    collect = _int(raw, "collect_digits", 0, 0, MAX_COLLECT_DIGITS, where)
    if action == "treatment":
        if moh == bool(prompt):
            raise RuleError(f"{where}: a treatment needs either prompt or moh = true")
        if prompt and (not isinstance(prompt, str) or not PROMPT_RE.fullmatch(prompt)):
            raise RuleError(f"{where}.prompt: {prompt!r} is not a safe sound name")
        if moh and collect:
            raise RuleError(f"{where}.collect_digits: music on hold collects no digits")
    return Rule(
        name=name, action=action, targets=targets, route_targets=tuple(route_targets),
        strategy=strategy, weights=weights,
        cause=cause, prompt=prompt if isinstance(prompt, str) else "", moh=moh,
        collect_digits=collect, timeout_ms=_int(raw, "timeout_ms", 5000, 1, 600_000, where),
        overflow_after=_int(raw, "overflow_after", 0, 0, 600, where),
        dnis=_strings(raw, "dnis", where), dnis_prefix=_strings(raw, "dnis_prefix", where),
        ani=_strings(raw, "ani", where), ani_prefix=_strings(raw, "ani_prefix", where),
        digits=_strings(raw, "digits", where),
        ani_withheld=_optional_bool(raw, "ani_withheld", where),
        agents_available=_optional_bool(raw, "agents_available", where),
        holiday=_optional_bool(raw, "holiday", where),
        days=_days(raw, where), hours=_hours(raw, where),
    )


def valid_target(target: str) -> bool:
    """Whether a rule may name this target (a bare value is an extension)."""
    try:
        Target.parse(target, bare=KIND_EXTENSION)
    except ValueError:
        return False
    return True


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RuleError(f"{where}.{key}: must be an integer in {low}..{high}, got {value!r}")
    return value


def _strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, ())
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}.{key}: must be a string or a list of strings, got {value!r}")
    return tuple(value)


def _optional_bool(raw: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, bool):
        raise RuleError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def _days(raw: Mapping[str, Any], where: str) -> frozenset[int] | None:
    if "days" not in raw:
        return None
    names = _strings(raw, "days", where)
    bad = [d for d in names if d.lower() not in DAYS]
    if bad or not names:
        raise RuleError(f"{where}.days: expected names from {DAYS}, got {list(names)!r}")
    return frozenset(DAYS.index(d.lower()) for d in names)


def _hours(raw: Mapping[str, Any], where: str) -> tuple[int, int] | None:
    if "hours" not in raw:
        return None
    text = raw["hours"]
    match = _HOURS_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise RuleError(f"{where}.hours: expected 'HH:MM-HH:MM', got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end > 24 * 60 or start == end:
        raise RuleError(f"{where}.hours: empty or out-of-range window {text!r}")
    return start, end
