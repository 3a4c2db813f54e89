"""A user's own routing rules (a portion): validation at write time, evaluation at call time.

`parse_portion(raw, ...)` turns a JSON body (as the HTTP API takes it) into a `RuleSet`
or raises `PortionError(field, reason)` naming the dotted path of the first bad value
(`rules[2].target`); it refuses unknown keys, wrong types, over-long lists and strings,
characters that could reach a dialplan or wire (`FORBIDDEN_CHARS`), and, when the
tenant's `extensions` are given (the bridge), any target outside the tenant. The
`RuleSet` it returns is normalised (every default written out), so `to_json()` is what
the store keeps and parsing it again gives the same `RuleSet`. `evaluate(rules, call,
now, ...)` picks the first rule whose `when` holds (time windows and days in the user's
timezone, a window across midnight belonging to the day it opened, as in
`ami_bridge.tenants.routing`, whose window and holiday test it reuses), turns its action
into a plan (an ordered list of steps ending in voicemail or a reject) and returns the
one `Step` to take now: it keeps no state, so a call that comes back to the venue with
`previous = (target, DIALSTATUS)` finds the same rule again and goes on from the plan
step that tried that target. The vocabulary, plans and limits are in
docs/personal-rules.md. Pure: no I/O, no clock of its own (`now` is passed in), no
asyncio, no logging.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ami_bridge.namespace import (
    EXTENSION_RE,
    KIND_EXTENSION,
    KIND_EXTERNAL,
    KIND_PHONES,
    KIND_VOICEMAIL,
    MAX_PHONES,
    NUMBER_RE,
    REJECT_CAUSES,
)
from ami_bridge.tenants import messages, routing
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.routing import DAYS, is_withheld

# -- limits (all from the design of issue 10, "Rule vocabulary") -------------------------
MAX_RULES = 50
MAX_PATTERNS = 100  # vip, blocked, and one rule's `callers`
MAX_SAVED = 20
MAX_STEPS = 10  # follow-me steps
MAX_TEXT = 64  # any string
MIN_SECONDS, MAX_SECONDS = 1, 300  # ring, after, a follow-me step's ring
# Characters refused anywhere in any string: line breaks and NUL could split an AGI or
# AMI line; the rest are Dial/dialplan separators, quoting and `${...}` expansion.
FORBIDDEN_CHARS = frozenset("\r\n\0&,();|${}[]\"'\\`")
NAME_RE = re.compile(r"[A-Za-z0-9 _.-]{0,64}")
PREFIX_RE = re.compile(r"\+?[0-9]{1,20}\*")  # a caller-number prefix: digits then one '*'
_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))")
_SAFE_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,32}")  # keys echoed in a field path

# -- vocabulary ------------------------------------------------------------------------
WITHHELD = "withheld"
LIST_VIP, LIST_BLOCKED = "@vip", "@blocked"
VOICEMAIL = "voicemail"  # the target "the user's own mailbox" (no value)
ACTIONS = ("ring", "forward", "follow_me", "dnd", "voicemail", "reject", "ask")
# "ask me": the call pops up on the user's workstations (or a pickup group's) for this
# long; no choice in time and the rules after it decide (docs/personal-rules.md).
ASK_TIMEOUT_DEFAULT = 15
ASK_TIMEOUT_RANGE = (5, 60)
GROUP_RE = messages.GROUP_RE  # pickup group names, as the VTS protocol carries them
FORWARD_ON = ("always", "busy", "no_answer")
FOLLOW_ME_MODES = ("sequential", "ring_all")
DND_THEN = ("voicemail", "reject")
CALLER_CLASSES = ("blocked", "vip", "withheld", "other")  # in order of precedence
_TOP_KEYS = ("version", "rules", "vip", "blocked", "saved")
_RULE_KEYS = ("name", "when", "action", "ring", "target", "on", "after", "steps", "mode",
              "then", "cause", "timeout", "group")
_WHEN_KEYS = ("days", "time", "holiday", "callers")
_STEP_KEYS = ("target", "ring")
_ACTION_KEYS: Mapping[str, tuple[str, ...]] = {
    "ring": ("ring",), "forward": ("target", "on", "after"), "follow_me": ("steps", "mode"),
    "dnd": ("then",), "voicemail": (), "reject": ("cause",), "ask": ("timeout", "group"),
}
# DIALSTATUS classes. ANSWER and CANCEL (the caller hung up while it rang) end the call:
# the dialplan asks again only by mistake, and then the plan must not ring anyone more.
# BUSY is busy; everything else (NOANSWER, CHANUNAVAIL, CONGESTION, and statuses a plan
# does not know) counts as "no answer", so the call always moves on to a later step.
ENDED_STATUSES = frozenset({"ANSWER", "CANCEL"})
BUSY_STATUS = "BUSY"


class PortionError(ValueError):
    """A portion refused at write time: `field` is a dotted path (`rules[2].target`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class RuleSet:
    """A validated, normalised portion body (no version: the store keeps that)."""

    rules: tuple[Mapping[str, Any], ...] = ()
    vip: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    saved: tuple[str, ...] = ()
    # The typed rules `parse_portion` built, and the ring time they were built for, so
    # `evaluate` does not validate the same rules again on every call (it does for a
    # RuleSet made by hand, or for another ring time). Not part of equality.
    compiled: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)
    compiled_ring_time: int = field(default=0, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A fresh JSON-compatible copy (mutating it leaves the RuleSet alone)."""
        return {"rules": [copy.deepcopy(dict(r)) for r in self.rules], "vip": list(self.vip),
                "blocked": list(self.blocked), "saved": list(self.saved)}


@dataclass(frozen=True)
class PersonalCall:
    ani: str
    number: str  # the user's personal number (the mailbox)
    bindings: tuple[str, ...]
    ani_name: str = ""
    previous: tuple[Target, str] | None = None  # what was tried last and its DIALSTATUS


@dataclass(frozen=True)
class Trace:
    rule: str  # "#1 night", "#3" (no name), "default"
    why: str  # a sentence: what matched and what led to this step
    inputs: Mapping[str, str] = field(default_factory=dict)  # time, timezone, day, ...
    step: int = 0  # position in the plan (0 = first; the plan's length once it ended)
    after: str = ""  # the previous DIALSTATUS that led here ("" on the first request)


@dataclass(frozen=True)
class Step:
    action: str  # "route" | "reject" | "ask"
    target: Target | None
    trace: Trace
    dial_timeout: int = 0  # seconds; 0 for voicemail (it ends the call itself)
    cause: str = ""  # reject: namespace.REJECT_CAUSES
    # ask: how long the workstations may choose, whose (a pickup group, "" the user's
    # own), and what the rules after the ask rule say if nobody chooses in time
    ask_timeout: int = 0
    group: str = ""
    otherwise: Step | None = None


# -- parsing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _When:
    window: routing.Rule  # days, time window, holiday: tested by routing.matches
    time: str = ""
    days: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.days:
            out["days"] = list(self.days)
        if self.time:
            out["time"] = self.time
        if self.window.holiday is not None:
            out["holiday"] = self.window.holiday
        if self.callers:
            out["callers"] = list(self.callers)
        return out


@dataclass(frozen=True)
class _Rule:
    number: int  # 1-based, as users count
    name: str
    when: _When
    action: str
    ring: int = 0  # ring: seconds
    target: str = ""  # forward
    on: str = "always"
    after: int = 0  # forward on no_answer: seconds
    steps: tuple[tuple[str, int], ...] = ()  # follow_me: (target, seconds)
    mode: str = "sequential"
    then: str = "voicemail"  # dnd
    cause: str = "busy"  # reject
    timeout: int = 0  # ask: seconds
    group: str = ""  # ask: the pickup group asked ("": the user's own workstations)

    @property
    def label(self) -> str:
        return f"#{self.number} {self.name}" if self.name else f"#{self.number}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "when": self.when.to_json(),
                               "action": self.action}
        if self.action == "ring":
            out["ring"] = self.ring
        elif self.action == "forward":
            out.update(target=self.target, on=self.on)
            if self.on == "no_answer":
                out["after"] = self.after
        elif self.action == "follow_me":
            out.update(mode=self.mode,
                       steps=[{"target": t, "ring": s} for t, s in self.steps])
        elif self.action == "dnd":
            out["then"] = self.then
        elif self.action == "reject":
            out["cause"] = self.cause
        elif self.action == "ask":
            out["timeout"] = self.timeout
            if self.group:
                out["group"] = self.group
        return out


@dataclass(frozen=True)
class _Namespace:
    extensions: Collection[str] | None  # None: shape checks only (the VTS)
    external_prefixes: Sequence[str]
    ring_time: int


def parse_portion(raw: object, *, extensions: Collection[str] | None,
                  external_prefixes: Sequence[str], ring_time: int) -> RuleSet:
    """Validate a portion body; `extensions=None` (in the VTS, from the bridge) skips the
    tenant-namespace checks but not the shape checks. A "version" key is ignored (the
    caller compares versions). ValueError if `ring_time` itself is out of range."""
    ring = _ring_time(ring_time)
    rule_set, compiled = _parse(raw, _Namespace(extensions, tuple(external_prefixes), ring))
    return replace(rule_set, compiled=compiled, compiled_ring_time=ring)


def _parse(raw: object, ns: _Namespace) -> tuple[RuleSet, tuple[_Rule, ...]]:
    body = _object(raw, "", _TOP_KEYS)
    rules = tuple(_rule(item, f"rules[{i}]", i + 1, ns)
                  for i, item in enumerate(_list(body.get("rules", []), "rules", MAX_RULES)))
    vip = tuple(_pattern(p, f"vip[{i}]", lists=False)
                for i, p in enumerate(_list(body.get("vip", []), "vip", MAX_PATTERNS)))
    blocked = tuple(_pattern(p, f"blocked[{i}]", lists=False) for i, p in
                    enumerate(_list(body.get("blocked", []), "blocked", MAX_PATTERNS)))
    saved = tuple(_target(t, f"saved[{i}]", ns)
                  for i, t in enumerate(_list(body.get("saved", []), "saved", MAX_SAVED)))
    return RuleSet(tuple(r.to_json() for r in rules), vip, blocked, saved), rules


def _ring_time(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ValueError(f"ring_time must be an integer in {MIN_SECONDS}..{MAX_SECONDS}, "
                         f"got {value!r}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: object, path: str, keys: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PortionError(path, f"must be a JSON object, got {_show(value)}")
    for key in value:
        if key not in keys:
            safe = isinstance(key, str) and _SAFE_KEY_RE.fullmatch(key)
            raise PortionError(_join(path, key) if safe else path,
                               f"unknown key {_show(key)} (allowed: {', '.join(keys)})")
    return value


def _list(value: object, path: str, most: int, *, least: int = 0) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise PortionError(path, f"must be a list, got {_show(value)}")
    if not least <= len(value) <= most:
        raise PortionError(path, f"must hold {least}..{most} entries, got {len(value)}")
    return value


def _text(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise PortionError(path, f"must be a string, got {_show(value)}")
    bad = next((c for c in value if c in FORBIDDEN_CHARS), None)
    if bad is not None:
        raise PortionError(path, f"contains the forbidden character {bad!r}")
    if len(value) > MAX_TEXT:
        raise PortionError(path, f"is longer than {MAX_TEXT} characters")
    return value


def _seconds(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not MIN_SECONDS <= value <= MAX_SECONDS:
        raise PortionError(path, f"must be a whole number of seconds in "
                                 f"{MIN_SECONDS}..{MAX_SECONDS}, got {_show(value)}")
    return value


def _choice(value: object, path: str, choices: Sequence[str]) -> str:
    text = _text(value, path)
    if text not in choices:
        raise PortionError(path, f"must be one of {', '.join(choices)}, got {text!r}")
    return text


def _pattern(value: object, path: str, *, lists: bool) -> str:
    """A caller pattern; `@vip`/`@blocked` only inside a rule (a list naming a list
    would be a loop)."""
    text = _text(value, path)
    if text == WITHHELD or NUMBER_RE.fullmatch(text) or PREFIX_RE.fullmatch(text):
        return text
    if text in (LIST_VIP, LIST_BLOCKED):
        if lists:
            return text
        raise PortionError(path, f"{text} may be used in a rule's callers, not in a list")
    raise PortionError(path, f"{text!r} is not a caller pattern (+4930123 or 030123 "
                             "exact, 0301* prefix, withheld, @vip, @blocked)")


def _target(value: object, path: str, ns: _Namespace) -> str:
    text = _text(value, path)
    if text == VOICEMAIL:
        return text
    kind, sep, number = text.partition(":")
    if not sep:
        raise PortionError(path, f"{text!r} is not a target: write extension:EXT, "
                                 "external:NUMBER or voicemail")
    if kind == VOICEMAIL:
        raise PortionError(path, "the voicemail target takes no value (it is your own "
                                 "mailbox): write voicemail")
    if kind == KIND_EXTENSION:
        if not EXTENSION_RE.fullmatch(number):
            raise PortionError(path, f"{number!r} is not an extension")
        if ns.extensions is not None and number not in ns.extensions:
            raise PortionError(path, f"extension {number} is not one of this tenant's")
    elif kind == KIND_EXTERNAL:
        if not NUMBER_RE.fullmatch(number):
            raise PortionError(path, f"{number!r} is not a number (+ and 2..20 digits)")
        if ns.extensions is not None:
            if not ns.external_prefixes:
                raise PortionError(path, "this tenant allows no external numbers")
            if not any(number.startswith(p) for p in ns.external_prefixes):
                raise PortionError(path, f"{number} does not start with one of this "
                                         f"tenant's prefixes ({', '.join(ns.external_prefixes)})")
    else:
        raise PortionError(path, f"target kind {kind!r} is not allowed here "
                                 "(extension, external, voicemail)")
    return text


def _when(value: object, path: str) -> _When:
    raw = _object(value, path, _WHEN_KEYS)
    days: tuple[str, ...] = ()
    if "days" in raw:
        where = _join(path, "days")
        names = {_text(d, f"{where}[{i}]").lower(): i
                 for i, d in enumerate(_list(raw["days"], where, 7, least=1))}
        for name, i in names.items():
            if name not in DAYS:
                raise PortionError(f"{where}[{i}]", f"must be one of {', '.join(DAYS)}")
        days = tuple(d for d in DAYS if d in names)  # week order, no repeats
    time, hours = "", None
    if "time" in raw:
        where = _join(path, "time")
        time = _text(raw["time"], where)
        match = _TIME_RE.fullmatch(time)
        if match is None:
            raise PortionError(where, f"{time!r} is not HH:MM-HH:MM (00:00..24:00)")
        h1, m1, h2, m2 = (int(g) for g in match.groups() if g is not None)
        hours = (h1 * 60 + m1, h2 * 60 + m2)
        if hours[0] == hours[1]:
            raise PortionError(where, f"{time!r} is empty (start equals end)")
    holiday = raw.get("holiday")
    if "holiday" in raw and not isinstance(holiday, bool):
        raise PortionError(_join(path, "holiday"), f"must be true or false, got {_show(holiday)}")
    callers: tuple[str, ...] = ()
    if "callers" in raw:
        where = _join(path, "callers")
        callers = tuple(_pattern(p, f"{where}[{i}]", lists=True) for i, p in
                        enumerate(_list(raw["callers"], where, MAX_PATTERNS, least=1)))
    window = routing.Rule(name="when", action="route", hours=hours, holiday=holiday,
                          days=frozenset(DAYS.index(d) for d in days) if days else None)
    return _When(window=window, time=time, days=days, callers=callers)


def _rule(value: object, path: str, number: int, ns: _Namespace) -> _Rule:
    raw = _object(value, path, _RULE_KEYS)
    if "action" not in raw:
        raise PortionError(_join(path, "action"), f"is missing (one of {', '.join(ACTIONS)})")
    action = _choice(raw["action"], _join(path, "action"), ACTIONS)
    for key in raw:
        if key not in ("name", "when", "action", *_ACTION_KEYS[action]):
            raise PortionError(_join(path, key), f"does not apply to action {action}")
    name = _text(raw.get("name", ""), _join(path, "name"))
    if not NAME_RE.fullmatch(name):
        raise PortionError(_join(path, "name"), "may hold only letters, digits, space, _ . -")
    when = _when(raw.get("when", {}), _join(path, "when"))
    rule = _Rule(number=number, name=name, when=when, action=action)
    get = raw.get
    if action == "ring":
        return replace(rule, ring=_seconds(get("ring", ns.ring_time), _join(path, "ring")))
    if action == "forward":
        if "target" not in raw:
            raise PortionError(_join(path, "target"), "is missing")
        on = _choice(get("on", "always"), _join(path, "on"), FORWARD_ON)
        if on != "no_answer" and "after" in raw:
            raise PortionError(_join(path, "after"), "applies only to on = no_answer")
        after = _seconds(get("after", ns.ring_time), _join(path, "after")) \
            if on == "no_answer" else 0
        return replace(rule, target=_target(raw["target"], _join(path, "target"), ns),
                        on=on, after=after)
    if action == "follow_me":
        mode = _choice(get("mode", "sequential"), _join(path, "mode"), FOLLOW_ME_MODES)
        return replace(rule, mode=mode, steps=_steps(raw.get("steps"),
                                                      _join(path, "steps"), mode, ns))
    if action == "dnd":
        return replace(rule, then=_choice(get("then", "voicemail"), _join(path, "then"),
                                           DND_THEN))
    if action == "reject":
        return replace(rule, cause=_choice(get("cause", "busy"), _join(path, "cause"),
                                            REJECT_CAUSES))
    if action == "ask":
        timeout = get("timeout", ASK_TIMEOUT_DEFAULT)
        low, high = ASK_TIMEOUT_RANGE
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not \
                low <= timeout <= high:
            raise PortionError(_join(path, "timeout"),
                               f"must be whole seconds {low}..{high}, got {_show(timeout)}")
        group = _text(get("group", ""), _join(path, "group"))
        if group and not GROUP_RE.fullmatch(group):
            raise PortionError(_join(path, "group"), "must be a pickup group name: lower-case "
                               "letters, digits, _ and -")
        return replace(rule, timeout=timeout, group=group)
    return rule  # voicemail


def _steps(value: object, path: str, mode: str, ns: _Namespace) -> tuple[tuple[str, int], ...]:
    most = MAX_PHONES if mode == "ring_all" else MAX_STEPS  # ring_all is one phones target
    steps: list[tuple[str, int]] = []
    for i, item in enumerate(_list(value, path, most, least=1)):
        where = f"{path}[{i}]"
        raw = _object(item, where, _STEP_KEYS)
        if "target" not in raw:
            raise PortionError(_join(where, "target"), "is missing")
        target = _target(raw["target"], _join(where, "target"), ns)
        if target == VOICEMAIL:
            raise PortionError(_join(where, "target"), "follow-me ends in voicemail by itself")
        if mode == "ring_all" and not target.startswith(f"{KIND_EXTENSION}:"):
            raise PortionError(_join(where, "target"), "ring_all rings extensions only")
        seen = [t for t, _ in steps]
        if target in seen:
            raise PortionError(_join(where, "target"),
                               f"{target} is already {path}[{seen.index(target)}]")
        steps.append((target, _seconds(raw.get("ring", ns.ring_time), _join(where, "ring"))))
    return tuple(steps)


# -- evaluation --------------------------------------------------------------------------

@dataclass(frozen=True)
class _PlanStep:
    target: Target | None  # None: a reject, or "ring my phones" with nothing bound
    text: str  # what this step does, for the trace ("extension:1002 for 20 s")
    seconds: int = 0
    cause: str = ""  # a reject's
    on_busy: int = -1  # index of the next step after BUSY / other failures (-1: i + 1)
    on_fail: int = -1

    @property
    def skipped(self) -> bool:
        return self.target is None and not self.cause


@dataclass(frozen=True)
class _Plan:
    steps: tuple[_PlanStep, ...]
    text: str  # the whole plan, for the first request's trace
    label: str  # the action in a few words, for later requests' traces


@dataclass(frozen=True)
class _Caller:
    ani: str
    withheld: bool
    vip: tuple[str, ...]
    blocked: tuple[str, ...]

    @property
    def shown(self) -> str:
        return WITHHELD if self.withheld else self.ani

    def matches(self, pattern: str) -> str | None:
        """Which pattern matched, quoted for the trace; None if none did."""
        if pattern in (LIST_VIP, LIST_BLOCKED):
            inner = next((p for p in (self.vip if pattern == LIST_VIP else self.blocked)
                          if self.matches(p)), None)
            return None if inner is None else f"'{pattern}' ('{inner}')"
        if pattern == WITHHELD:
            hit = self.withheld
        elif self.withheld:
            hit = False
        elif pattern.endswith("*"):
            hit = self.ani.startswith(pattern[:-1])
        else:
            hit = self.ani == pattern
        return f"'{pattern}'" if hit else None

    @property
    def caller_class(self) -> str:
        if self.matches(LIST_BLOCKED):
            return "blocked"
        if self.matches(LIST_VIP):
            return "vip"
        return WITHHELD if self.withheld else "other"


def evaluate(rules: RuleSet, call: PersonalCall, now: dt.datetime, *, timezone: str,
             holidays: Sequence[str], ring_time: int, ask: bool = True) -> Step:
    """The one step to take now for this call (see the module docstring). Never raises
    for a call; ValueError only for a `ring_time` outside 1..300 (a config error).
    An `ask` rule is only ever the first step of a call (`previous` is None, and `ask`);
    its Step carries in `otherwise` what the rules after it decide."""
    ring_time = _ring_time(ring_time)
    notes: list[str] = []
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        zone = ZoneInfo("UTC")
        notes.append(f"timezone {_show(timezone)} is unknown, so UTC is used")
    if now.tzinfo is None:  # the contract says aware UTC; never fall back to the host's zone
        now = now.replace(tzinfo=dt.UTC)
    local = now.astimezone(zone)
    days_off = frozenset(_dates(holidays))
    if rules.compiled is not None and rules.compiled_ring_time == ring_time:
        valid, compiled = rules, rules.compiled  # built by parse_portion for this ring time
    else:
        try:  # parsed again: evaluation reads typed rules, and trusts no hand-made RuleSet
            valid, compiled = _parse(rules.to_json(), _Namespace(None, (), ring_time))
        except (TypeError, ValueError) as error:
            valid, compiled = RuleSet(), ()
            notes.append(f"the rules are invalid ({error}), so none applies")
    caller = _Caller(call.ani.strip(), is_withheld(call.ani), valid.vip, valid.blocked)
    inputs = {"time": local.isoformat(timespec="seconds"), "timezone": str(zone.key),
              "day": DAYS[local.weekday()], "holiday": "yes" if local.date() in days_off
              else "no", "caller_class": caller.caller_class}
    asking = ask and call.previous is None
    chosen = _choose(compiled, local, days_off, caller, notes, asking)
    if chosen is not None and chosen[0].action == "ask":
        rule, reasons = chosen
        otherwise = evaluate(rules, call, now, timezone=timezone, holidays=holidays,
                             ring_time=ring_time, ask=False)
        who = f"pickup group {rule.group!r}" if rule.group else "the user's workstations"
        why = (f"rule #{rule.number}{_quoted(rule.name)} matched: "
               f"{'; '.join(reasons) or 'it has no conditions'}; ask {who} for "
               f"{rule.timeout} s, then: {otherwise.trace.why}")
        trace = Trace(rule=rule.label, why="".join(f"{n}; " for n in notes) + why,
                      inputs=inputs)
        return Step("ask", None, trace, ask_timeout=rule.timeout, group=rule.group,
                    otherwise=otherwise)
    bindings, vm = _phones(call.bindings), _voicemail(call.number)
    if chosen is None:
        plan, head, rule_name = _plan_ring(bindings, vm, ring_time), "no rule matched", "default"
        matched = ""
    else:
        rule, reasons = chosen
        plan = _plan(rule, bindings, vm, ring_time)
        head, rule_name = f"rule #{rule.number}{_quoted(rule.name)}", rule.label
        matched = f" matched: {'; '.join(reasons) or 'it has no conditions'}; plan"
    if call.previous is None:
        index, skips = _unskip(plan, 0)
        why, after = f"{head}{matched}: {plan.text}{skips}", ""
    else:
        index, why = _position(plan, *call.previous)
        why, after = f"{head} ({plan.label}): {why}", call.previous[1].strip().upper()
    trace = Trace(rule=rule_name, why="".join(f"{n}; " for n in notes) + why, inputs=inputs,
                  step=index, after=after)
    if index >= len(plan.steps):
        return Step("reject", None, trace, cause="congestion")
    planned = plan.steps[index]
    if planned.target is None:
        return Step("reject", None, trace, cause=planned.cause)
    timeout = 0 if planned.target.kind == KIND_VOICEMAIL else planned.seconds
    return Step("route", planned.target, trace, dial_timeout=timeout)


def _choose(compiled: Sequence[_Rule], local: dt.datetime, days_off: frozenset[dt.date],
            caller: _Caller, notes: list[str],
            asking: bool = False) -> tuple[_Rule, list[str]] | None:
    """The first rule whose `when` holds (with its reasons); a do-not-disturb rule lets
    VIP callers through to the rules after it (noted in `notes`); an ask rule counts
    only when `asking` (the call's first step, before anyone was asked)."""
    for rule in compiled:
        if rule.action == "ask" and not asking:
            continue
        reasons = _holds(rule.when, local, days_off, caller)
        if reasons is None:
            continue
        if rule.action == "dnd" and caller.matches(LIST_VIP):
            notes.append(f"rule #{rule.number}{_quoted(rule.name)} (do not disturb) "
                         f"skipped: caller {caller.shown} is a VIP")
            continue
        return rule, reasons
    return None


def _position(plan: _Plan, target: Target, raw_status: str) -> tuple[int, str]:
    """Where a call that came back from `target` with this DIALSTATUS goes on in the plan
    (an index past the plan's end: it has ended), and why."""
    status = raw_status.strip().upper()
    came_back = f"{target} gave {status or 'no status'}"
    end = len(plan.steps)
    if target.kind == KIND_VOICEMAIL:
        return end, (f"{came_back}, but voicemail ends the plan: the call should not have "
                     "come back, so reject (congestion)")
    if status in ENDED_STATUSES:
        what = "was answered" if status == "ANSWER" else "was abandoned by the caller"
        return end, f"{came_back}: the call {what}, so nothing more is tried: reject (congestion)"
    found = next((i for i, s in enumerate(plan.steps) if s.target == target), None)
    if found is None:  # the rule that matched, or the bindings, changed during the call
        return end - 1, (f"{came_back}, which is not a step of this plan (the rules or the "
                         f"bindings changed during the call), so {plan.steps[-1].text}")
    tried = plan.steps[found]
    following = tried.on_busy if status == BUSY_STATUS else tried.on_fail
    index, skips = _unskip(plan, found + 1 if following < 0 else following)
    return index, f"{came_back}, so {plan.steps[index].text}{skips}"


def _quoted(name: str) -> str:
    return f" '{name}'" if name else ""


def _dates(holidays: Sequence[object]) -> list[dt.date]:
    """The tenant's holidays as routing.py reads them (ISO dates, or TOML dates); the
    config loader refused bad ones, so one that slips through is ignored, not fatal."""
    out = []
    for text in holidays:
        try:
            out.append(dt.date.fromisoformat(str(text)))
        except ValueError:
            continue
    return out


_NO_CALL = routing.CallInfo(ani="", dnis="")  # `when` tests time only through routing


def _holds(when: _When, local: dt.datetime, days_off: frozenset[dt.date],
           caller: _Caller) -> list[str] | None:
    """The reasons `when` holds (one per condition), or None when it does not."""
    if not routing.matches(when.window, _NO_CALL, local, days_off):
        return None
    reasons = []
    day = DAYS[local.weekday()]
    clock = f"{day.capitalize()} {local:%H:%M} {local.tzinfo}"
    if when.time:
        reasons.append(f"{clock} is in {when.time}")
    if when.days:
        opened = day
        if when.window.hours is not None:
            start, end = when.window.hours
            if start > end and local.hour * 60 + local.minute < end:
                opened = DAYS[(local.weekday() - 1) % 7]
        said = f"{day.capitalize()}" if opened == day \
            else f"the window opened on {opened.capitalize()}, which"
        reasons.append(f"{said} is one of {', '.join(when.days)}")
    if when.window.holiday is not None:
        reasons.append(f"{local.date()} is {'' if when.window.holiday else 'not '}a holiday")
    if when.callers:
        hit = next((m for m in map(caller.matches, when.callers) if m), None)
        if hit is None:
            return None
        reasons.append(f"caller {caller.shown} matches {hit}")
    return reasons


def _phones(bindings: Sequence[str]) -> tuple[str, ...]:
    """The bindings a phones target can carry: well formed, once each, at most 8."""
    out: list[str] = []
    for ext in bindings:
        if isinstance(ext, str) and EXTENSION_RE.fullmatch(ext) and ext not in out:
            out.append(ext)
    return tuple(out[:MAX_PHONES])


def _voicemail(number: str) -> _PlanStep:
    if not EXTENSION_RE.fullmatch(number):  # no mailbox to leave a message in
        return _PlanStep(None, "reject (congestion): no valid mailbox number",
                         cause="congestion")
    return _PlanStep(Target(KIND_VOICEMAIL, number), "voicemail")


def _ring_phones(bindings: tuple[str, ...], seconds: int, *, on_busy: int = -1,
                 on_fail: int = -1) -> _PlanStep:
    if not bindings:
        return _PlanStep(None, "ring my phones (none bound: skipped)", seconds,
                         on_busy=on_busy, on_fail=on_fail)
    return _PlanStep(Target(KIND_PHONES, "&".join(bindings)),
                     f"ring my phones ({', '.join(bindings)}) for {seconds} s", seconds,
                     on_busy=on_busy, on_fail=on_fail)


def _dial(spec: str, seconds: int, vm: _PlanStep) -> _PlanStep:
    if spec == VOICEMAIL:
        return vm
    return _PlanStep(Target.parse(spec), f"{spec} for {seconds} s", seconds)


def _plan_ring(bindings: tuple[str, ...], vm: _PlanStep, seconds: int) -> _Plan:
    phones = _ring_phones(bindings, seconds)
    return _Plan((phones, vm), f"{phones.text}, then voicemail",
                 f"ring my phones for {seconds} s")


def _plan(rule: _Rule, bindings: tuple[str, ...], vm: _PlanStep, ring_time: int) -> _Plan:
    if rule.action == "ring":
        return _plan_ring(bindings, vm, rule.ring)
    if rule.action == "forward":
        return _plan_forward(rule, bindings, vm, ring_time)
    if rule.action == "follow_me":
        dials = [_dial(t, s, vm) for t, s in rule.steps]
        if rule.mode == "ring_all":
            values = "&".join(t.partition(":")[2] for t, _ in rule.steps)
            longest = max(s for _, s in rule.steps)
            dials = [_PlanStep(Target(KIND_PHONES, values),
                               f"phones:{values} for {longest} s", longest)]
        text = ", then ".join([d.text for d in dials] + ["voicemail"])
        mode = "ring all" if rule.mode == "ring_all" else "one after the other"
        return _Plan((*dials, vm), f"follow me ({mode}): {text}", f"follow me, {mode}")
    if rule.action == "dnd":
        end = vm if rule.then == "voicemail" else _PlanStep(None, "reject (busy)",
                                                             cause="busy")
        return _Plan((end,), f"do not disturb: {end.text}", "do not disturb")
    if rule.action == "reject":
        end = _PlanStep(None, f"reject ({rule.cause})", cause=rule.cause)
        return _Plan((end,), end.text, "reject")
    return _Plan((vm,), "voicemail", "voicemail")


def _plan_forward(rule: _Rule, bindings: tuple[str, ...], vm: _PlanStep,
                  ring_time: int) -> _Plan:
    forward = _dial(rule.target, ring_time, vm)
    if rule.on == "always":
        if forward is vm:
            return _Plan((vm,), "forward to voicemail", "forward always")
        return _Plan((forward, vm), f"forward to {forward.text}, then voicemail",
                     "forward always")
    last = 2 if forward is not vm else 1  # the index of voicemail in the plan
    if rule.on == "busy":
        phones = _ring_phones(bindings, ring_time, on_busy=1, on_fail=last)
        return _Plan((phones, forward, vm)[:last + 1],
                     f"{phones.text}; if busy, {forward.text}; otherwise voicemail",
                     "forward on busy")
    phones = _ring_phones(bindings, rule.after, on_busy=last, on_fail=1)
    return _Plan((phones, forward, vm)[:last + 1],
                 f"{phones.text}; if no answer, {forward.text}; if busy, voicemail",
                 f"forward on no answer after {rule.after} s")


def _unskip(plan: _Plan, index: int) -> tuple[int, str]:
    """Steps past "ring my phones" when nothing is bound; the plan's last step (voicemail
    or a reject) is never skipped, so this ends."""
    skips = ""
    while index < len(plan.steps) - 1 and plan.steps[index].skipped:
        skips = f"; no phones are bound, so {plan.steps[index + 1].text}"
        index += 1
    return index, skips

