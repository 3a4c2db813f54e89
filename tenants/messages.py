"""The bridge <-> VTS messages as frozen types, and the one `parse()` that builds them.

Every message of docs/vts-protocol.md is a frozen dataclass here; `parse(obj)` turns a
decoded frame (a JSON object from `ami_bridge.tenants.protocol`) into one of them or
raises `MessageError` naming the bad field, and `to_wire(message)` is the only way back
to a JSON object. `parse` accepts any JSON value in any field: whatever it is, the
result is a message or a `MessageError`, never another exception (a hypothesis test
holds it to that). Unknown keys are ignored, as the protocol document promises. A route
target is one `Target(kind, value)`, written `KIND:VALUE` everywhere it is text (rules,
the wire, `previous`, AB_LAST); a rule may still write a bare extension. Values are
checked against `ami_bridge.namespace`; whether a target is the tenant's own is the
intermediary's question, not this module's. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ami_bridge.namespace import (
    KIND_EXTENSION,
    MAX_COLLECT_DIGITS,
    PERSONAL_KINDS,
    PROMPT_RE,
    REJECT_CAUSES,
    TARGET_KINDS,
    TARGET_VALUE_RE,
)
from ami_bridge.tenants.protocol import JsonObject, encoded_size

# A dial timeout above ten minutes is a mistake, not a plan (Dial's own timeout is free).
MAX_DIAL_TIMEOUT = 600
# How long a treatment waits for digits unless the VTS says (GET DATA's timeout).
DEFAULT_DIGIT_TIMEOUT_MS = 5000
# A disposition's trace is the VTS's to write and the bridge's to store: cut to size.
MAX_TRACE_TEXT = 500
MAX_TRACE_INPUTS = 16
MAX_TRACE_INPUT = 100
# An ask: a workstation has at most a minute to choose; a VTS's lookup data is small.
MAX_ASK_MS = 60_000
MAX_LOOKUP = 8
# A VTS's saved state (protocol 2.2) is a few cursors, not a database: the bridge keeps
# the latest per tenant in memory and in its store, so it is bounded (docs/vts-protocol.md).
MAX_STATE_BYTES = 4096  # the `state` object, encoded compactly
GROUP_RE = re.compile(r"[a-z0-9_-]{1,32}")  # fullmatch; pickup group names


class MessageError(ValueError):
    """A message does not follow docs/vts-protocol.md: `field` names what is wrong.

    `type` and `handle` are the message's own, when they were strings, so the receiver
    can still tell whose message it was (and refuse just that one)."""

    def __init__(self, field_name: str, problem: str, *, type_: str | None = None,
                 handle: str | None = None) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.type = type_
        self.handle = handle


@dataclass(frozen=True)
class Target:
    """Where a route goes: `kind` (namespace.TARGET_KINDS) and a value safe for its kind."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        pattern = TARGET_VALUE_RE.get(self.kind)
        if pattern is None:
            raise ValueError(f"target kind {self.kind!r} is not one of "
                             f"{', '.join(PERSONAL_KINDS)}")
        if not isinstance(self.value, str) or not pattern.fullmatch(self.value):
            raise ValueError(f"{self.value!r} is not a valid {self.kind}")

    @classmethod
    def parse(cls, text: object, *, bare: str | None = None) -> Target:
        """`KIND:VALUE` -> Target, or ValueError saying why not. `bare`: the kind of a
        text without `KIND:` (routing rules: extension), None to refuse one (the wire)."""
        if not isinstance(text, str):
            raise ValueError(f"target must be a string 'KIND:VALUE', got {text!r}")
        kind, sep, value = text.partition(":")
        if not sep:
            if bare is None:
                raise ValueError(f"target {text!r} is not KIND:VALUE "
                                 f"(KIND: {', '.join(TARGET_KINDS)})")
            kind, value = bare, text
        return cls(kind, value)

    @classmethod
    def extension(cls, value: str) -> Target:
        return cls(KIND_EXTENSION, value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


# -- bridge -> VTS ----------------------------------------------------------------------

@dataclass(frozen=True)
class TenantRouting:
    """One tenant's routing protocol as `hello` carries it (see docs/configuration.md)."""

    timezone: str = "UTC"
    holidays: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()  # the extensions of its namespace
    extensions: Mapping[str, str] = field(default_factory=dict)  # extension -> device
    rules: tuple[Mapping[str, Any], ...] = ()  # as declared; parsed by routing.py
    ring_time: int = 0  # a personal venue's "ring my phones" seconds; 0: no personal venue


@dataclass(frozen=True)
class Hello:
    """Both ways, first: the protocol version; from the bridge also the VTS's tenants;
    from a VTS (minor 1) the event kinds it wants (`events`, None: every kind)."""

    TYPE: ClassVar[str] = "hello"
    v: int
    vts: str = ""
    tenants: Mapping[str, TenantRouting] = field(default_factory=dict)
    minor: int = 0
    events: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Previous:
    """What a call that came back to its venue tried last, and Asterisk's DIALSTATUS."""

    target: Target
    status: str


@dataclass(frozen=True)
class CallerData:
    ani: str = ""
    ani_name: str = ""
    dnis: str = ""
    dnid: str = ""
    language: str = ""
    uniqueid: str = ""
    previous: Previous | None = None


@dataclass(frozen=True)
class UserRouting:
    """In a personal venue's route request: the dialled user and his or her own rules
    (the portion body, ami_bridge.tenants.personal) as they are now."""

    user_id: str
    number: str  # the personal number dialled (the user's mailbox)
    timezone: str  # "" : the tenant's
    bindings: tuple[str, ...]  # extensions whose devices ring for the user now
    version: int  # of the portion
    portion: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteRequest:
    TYPE: ClassVar[str] = "route_request"
    handle: str
    tenant: str
    venue: str
    timeout_ms: int
    call: CallerData
    user: UserRouting | None = None  # personal venues only


@dataclass(frozen=True)
class TraceInfo:
    """Why a VTS decided what it did, recorded by the bridge (`ami-bridge trace`): the
    rule that matched, a sentence, and the inputs it saw. Cut to the MAX_TRACE_* sizes."""

    rule: str = ""
    why: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TreatmentDone:
    TYPE: ClassVar[str] = "event"
    EVENT: ClassVar[str] = "treatment_done"
    handle: str
    ok: bool
    digits: str = ""


@dataclass(frozen=True)
class Abandoned:
    TYPE: ClassVar[str] = "event"
    EVENT: ClassVar[str] = "abandoned"
    handle: str


@dataclass(frozen=True)
class DefaultRouted:
    TYPE: ClassVar[str] = "event"
    EVENT: ClassVar[str] = "default_routed"
    handle: str
    reason: str


@dataclass(frozen=True)
class CallProgress:
    """An AMI event about one of the VTS's calls (ami_bridge/ami/EVENTS.md)."""

    TYPE: ClassVar[str] = "event"
    EVENT: ClassVar[str] = "call"
    kind: str
    venue: str
    uniqueid: str
    leg: str
    channel: str
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentState:
    TYPE: ClassVar[str] = "agent_state"
    tenant: str
    device: str
    available: bool
    state: str
    paused: bool
    idle_since: float | None = None


@dataclass(frozen=True)
class State:
    """Both ways (minor 2): a VTS's small persistent state for one of its tenants. From
    the VTS: its latest state (the bridge keeps it for the tenant and saves it); from the
    bridge, after the VTS's hello: the tenant's last saved state, to resume from."""

    TYPE: ClassVar[str] = "state"
    tenant: str
    state: Mapping[str, Any]


@dataclass(frozen=True)
class Error:
    TYPE: ClassVar[str] = "error"
    handle: str | None
    code: str
    message: str


# -- VTS -> bridge: dispositions ----------------------------------------------------------

@dataclass(frozen=True)
class RouteTo:
    TYPE: ClassVar[str] = "disposition"
    ACTION: ClassVar[str] = "route"
    handle: str
    target: Target
    dial_timeout: int = 0  # seconds; 0: the dialplan's own
    trace: TraceInfo | None = None


@dataclass(frozen=True)
class Treat:
    TYPE: ClassVar[str] = "disposition"
    ACTION: ClassVar[str] = "treatment"
    handle: str
    prompt: str = ""
    collect_digits: int = 0
    timeout_ms: int = DEFAULT_DIGIT_TIMEOUT_MS
    moh: bool = False


@dataclass(frozen=True)
class Reject:
    TYPE: ClassVar[str] = "disposition"
    ACTION: ClassVar[str] = "reject"
    handle: str
    cause: str = "busy"
    trace: TraceInfo | None = None


@dataclass(frozen=True)
class TakeDefault:
    TYPE: ClassVar[str] = "disposition"
    ACTION: ClassVar[str] = "default"
    handle: str
    trace: TraceInfo | None = None


@dataclass(frozen=True)
class Ask:
    """Personal venues: pop the call up on the user's (or a pickup group's) workstations
    for `timeout_ms`; the first valid choice there routes it, else `otherwise` (what the
    user's rules after the ask rule say). `lookup`: what the VTS found by the caller."""

    TYPE: ClassVar[str] = "disposition"
    ACTION: ClassVar[str] = "ask"
    handle: str
    timeout_ms: int
    otherwise: RouteTo | Reject | TakeDefault
    group: str = ""
    lookup: Mapping[str, str] = field(default_factory=dict)
    trace: TraceInfo | None = None


# The kinds of `call` events (ami_bridge/ami/EVENTS.md) and, with `agent_state`, what a
# VTS may name in its hello's `events` (minor 1). Events about a handle the VTS was
# given (treatment_done, abandoned, default_routed) and errors are always sent.
CALL_EVENT_KINDS = ("dial_begin", "dial_end", "answer", "bridge_enter", "bridge_leave",
                    "hold", "unhold", "transfer", "hangup", "call_end")
AGENT_STATE = "agent_state"
SUBSCRIBABLE = (AGENT_STATE, *CALL_EVENT_KINDS)

Disposition = RouteTo | Treat | Reject | TakeDefault | Ask
Event = TreatmentDone | Abandoned | DefaultRouted | CallProgress
Message = Hello | RouteRequest | Event | AgentState | Error | Disposition | State
EVENTS: tuple[type[Event], ...] = (TreatmentDone, Abandoned, DefaultRouted, CallProgress)
DISPOSITIONS: tuple[type[Disposition], ...] = (RouteTo, Treat, Reject, TakeDefault, Ask)
MESSAGES: tuple[type[Message], ...] = (Hello, RouteRequest, *EVENTS, AgentState, Error,
                                       *DISPOSITIONS, State)


# -- parsing ------------------------------------------------------------------------------

class _Fields:
    """Typed reads of one JSON object; every failure is a MessageError naming the key."""

    def __init__(self, obj: Mapping[str, Any], where: str, type_: str | None,
                 handle: str | None) -> None:
        self.obj, self.where, self.type, self.handle = obj, where, type_, handle

    def fail(self, key: str, problem: str) -> MessageError:
        return MessageError(f"{self.where}{key}", problem, type_=self.type, handle=self.handle)

    def get(self, key: str, default: Any) -> Any:
        return self.obj.get(key, default)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.obj.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_show(value)}")
        return value

    def integer(self, key: str, default: int | None, low: int, high: int | None = None) -> int:
        value = self.obj.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (
                high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise self.fail(key, f"must be an integer {span}, got {_show(value)}")
        return value

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self.obj.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_show(value)}")
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.obj.get(key, default)
        if value not in allowed or not isinstance(value, str):
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {_show(value)}")
        return value

    def table(self, key: str, *, required: bool = False) -> _Fields:
        value = self.obj.get(key, None if required else {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be an object, got {_show(value)}")
        return _Fields(value, f"{self.where}{key}.", self.type, self.handle)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a list of strings, got {_show(value)}")
        return tuple(value)

    def target(self, key: str) -> Target:
        try:
            return Target.parse(self.obj.get(key))
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None


def _show(value: object) -> str:
    """A bad value for an error message, cut short: it came from the peer."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(obj: object) -> Message:
    """One decoded frame -> its message, or MessageError naming the bad field."""
    if not isinstance(obj, Mapping):
        raise MessageError("(message)", f"must be a JSON object, got {_show(obj)}")
    type_ = obj.get("type")
    raw_handle = obj.get("handle")
    handle = raw_handle if isinstance(raw_handle, str) else None
    f = _Fields(obj, "", type_ if isinstance(type_, str) else None, handle)
    if type_ == "disposition":
        return _disposition(f)
    if type_ == "route_request":
        return _route_request(f)
    if type_ == "event":
        return _event(f)
    if type_ == "hello":
        events = None if f.get("events", None) is None else f.strings("events")
        return Hello(v=f.integer("v", None, 0), vts=f.string("vts", ""),
                     tenants=_tenants(f.table("tenants")), minor=f.integer("minor", 0, 0),
                     events=events)
    if type_ == "agent_state":
        idle = f.get("idle_since", None)
        if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int | float)):
            raise f.fail("idle_since", f"must be a number or null, got {_show(idle)}")
        return AgentState(tenant=f.string("tenant"), device=f.string("device"),
                          available=f.boolean("available"), state=f.string("state", ""),
                          paused=f.boolean("paused", False), idle_since=idle)
    if type_ == "state":
        return _state(f)
    if type_ == "error":
        if raw_handle is not None and handle is None:
            raise f.fail("handle", f"must be a string or null, got {_show(raw_handle)}")
        return Error(handle=handle, code=f.string("code"), message=f.string("message", ""))
    raise f.fail("type", f"unknown message type {_show(type_)}")


def _state(f: _Fields) -> State:
    """A state frame: the tenant and a JSON object of at most MAX_STATE_BYTES encoded."""
    tenant = f.string("tenant")
    body = f.table("state", required=True).obj
    size = encoded_size(body)
    if size > MAX_STATE_BYTES:
        raise f.fail("state", f"{size} bytes encoded, more than the limit of "
                     f"{MAX_STATE_BYTES} (MAX_STATE_BYTES)")
    return State(tenant=tenant, state=dict(body))


def _handle(f: _Fields) -> str:
    return f.string("handle")


def _disposition(f: _Fields) -> Disposition:
    handle = _handle(f)
    action = f.get("action", None)
    if action == "route":
        return RouteTo(handle, f.target("target"),
                       f.integer("dial_timeout", 0, 0, MAX_DIAL_TIMEOUT), trace=_trace(f))
    if action == "treatment":
        moh = f.boolean("moh", False)
        digits = f.integer("collect_digits", 0, 0, MAX_COLLECT_DIGITS)
        timeout = f.integer("timeout_ms", DEFAULT_DIGIT_TIMEOUT_MS, 1)
        if moh:
            if f.get("prompt", "") or digits:
                raise f.fail("moh", "music on hold takes no prompt and collects no digits")
            return Treat(handle, moh=True)
        prompt = f.string("prompt", "")
        if not PROMPT_RE.fullmatch(prompt):
            raise f.fail("prompt", f"{_show(prompt)} is not a safe sound name (letters, "
                         "digits, _ and - in up to 4 '/'-separated parts)")
        return Treat(handle, prompt=prompt, collect_digits=digits, timeout_ms=timeout)
    if action == "reject":
        return Reject(handle, f.choice("cause", "busy", REJECT_CAUSES), trace=_trace(f))
    if action == "default":
        return TakeDefault(handle, trace=_trace(f))
    if action == "ask":
        inner = f.table("otherwise", required=True)
        otherwise = _disposition(_Fields({**inner.obj, "handle": handle}, inner.where,
                                         f.type, f.handle))
        if not isinstance(otherwise, RouteTo | Reject | TakeDefault):
            raise f.fail("otherwise", "must be a route, reject or default disposition")
        lookup = f.table("lookup")
        if len(lookup.obj) > MAX_LOOKUP:
            raise f.fail("lookup", f"at most {MAX_LOOKUP} entries")
        group = f.string("group", "")
        if group and not GROUP_RE.fullmatch(group):
            raise f.fail("group", f"{_show(group)} is not a pickup group name")
        return Ask(handle, f.integer("timeout_ms", None, 1, MAX_ASK_MS), otherwise,
                   group=group,
                   lookup={str(k)[:MAX_TRACE_INPUT]: lookup.string(k)[:MAX_TRACE_INPUT]
                           for k in lookup.obj},
                   trace=_trace(f))
    raise f.fail("action", "must be route, treatment, reject, default or ask, got "
                 f"{_show(action)}")


def _trace(f: _Fields) -> TraceInfo | None:
    """A disposition's optional trace; texts cut to size, not refused (a long sentence
    must not cost the caller the route)."""
    if f.get("trace", None) is None:
        return None
    t = f.table("trace")
    inputs = t.table("inputs")
    return TraceInfo(rule=t.string("rule", "")[:MAX_TRACE_INPUT],
                     why=t.string("why", "")[:MAX_TRACE_TEXT],
                     inputs={str(k)[:MAX_TRACE_INPUT]: inputs.string(k)[:MAX_TRACE_INPUT]
                             for k in list(inputs.obj)[:MAX_TRACE_INPUTS]})


def _user(f: _Fields) -> UserRouting | None:
    if f.get("user", None) is None:
        return None
    u = f.table("user")
    return UserRouting(user_id=u.string("id"), number=u.string("number"),
                       timezone=u.string("timezone", ""), bindings=u.strings("bindings"),
                       version=u.integer("version", 0, 0), portion=dict(u.table("portion").obj))


def _route_request(f: _Fields) -> RouteRequest:
    call = f.table("call", required=True)
    previous = None
    if call.get("previous", None) is not None:
        last = call.table("previous")
        previous = Previous(last.target("target"), last.string("status"))
    caller = CallerData(ani=call.string("ani", ""), ani_name=call.string("ani_name", ""),
                        dnis=call.string("dnis", ""), dnid=call.string("dnid", ""),
                        language=call.string("language", ""),
                        uniqueid=call.string("uniqueid", ""), previous=previous)
    return RouteRequest(handle=_handle(f), tenant=f.string("tenant"), venue=f.string("venue"),
                        timeout_ms=f.integer("timeout_ms", None, 0), call=caller,
                        user=_user(f))


def _event(f: _Fields) -> Event:
    event = f.get("event", None)
    if event == "call":
        detail = f.table("detail")
        return CallProgress(kind=f.string("kind"), venue=f.string("venue"),
                            uniqueid=f.string("uniqueid"), leg=f.string("leg", ""),
                            channel=f.string("channel", ""),
                            detail={k: detail.string(k) for k in detail.obj})
    if event == "treatment_done":
        return TreatmentDone(_handle(f), ok=f.boolean("ok"), digits=f.string("digits", ""))
    if event == "abandoned":
        return Abandoned(_handle(f))
    if event == "default_routed":
        return DefaultRouted(_handle(f), reason=f.string("reason", ""))
    raise f.fail("event", f"unknown event {_show(event)}")


def _tenants(f: _Fields) -> dict[str, TenantRouting]:
    tenants = {}
    for name in f.obj:
        t = f.table(name)
        extensions = t.table("extensions")
        rules = t.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
            raise t.fail("rules", f"must be a list of objects, got {_show(rules)}")
        tenants[str(name)] = TenantRouting(
            timezone=t.string("timezone", "UTC"), holidays=t.strings("holidays"),
            targets=t.strings("targets"),
            extensions={k: extensions.string(k) for k in extensions.obj},
            rules=tuple(rules), ring_time=t.integer("ring_time", 0, 0))
    return tenants


# -- to the wire --------------------------------------------------------------------------

def to_wire(message: Message) -> JsonObject:
    """The JSON object for one message (docs/vts-protocol.md), ready for `encode`."""
    if isinstance(message, RouteRequest):
        out: JsonObject = {"type": message.TYPE, "handle": message.handle,
                           "tenant": message.tenant, "venue": message.venue,
                           "timeout_ms": message.timeout_ms,
                           "call": _caller_wire(message.call)}
        if message.user is not None:
            u = message.user
            out["user"] = {"id": u.user_id, "number": u.number, "timezone": u.timezone,
                           "bindings": list(u.bindings), "version": u.version,
                           "portion": dict(u.portion)}
        return out
    if isinstance(message, RouteTo):
        out = {"type": message.TYPE, "handle": message.handle,
               "action": message.ACTION, "target": str(message.target)}
        if message.dial_timeout:
            out["dial_timeout"] = message.dial_timeout
        return _with_trace(out, message.trace)
    if isinstance(message, Treat):
        out = {"type": message.TYPE, "handle": message.handle, "action": message.ACTION}
        if message.moh:
            out["moh"] = True
            return out
        out["prompt"] = message.prompt
        if message.collect_digits:
            out["collect_digits"] = message.collect_digits
            out["timeout_ms"] = message.timeout_ms
        return out
    if isinstance(message, Reject):
        return _with_trace({"type": message.TYPE, "handle": message.handle,
                            "action": message.ACTION, "cause": message.cause}, message.trace)
    if isinstance(message, TakeDefault):
        return _with_trace({"type": message.TYPE, "handle": message.handle,
                            "action": message.ACTION}, message.trace)
    if isinstance(message, Ask):
        otherwise = to_wire(message.otherwise)
        for key in ("type", "handle"):
            otherwise.pop(key, None)
        out = {"type": message.TYPE, "handle": message.handle, "action": message.ACTION,
               "timeout_ms": message.timeout_ms, "otherwise": otherwise,
               "lookup": dict(message.lookup)}
        if message.group:
            out["group"] = message.group
        return _with_trace(out, message.trace)
    if isinstance(message, CallProgress):
        return {"type": message.TYPE, "event": message.EVENT, "kind": message.kind,
                "venue": message.venue, "uniqueid": message.uniqueid, "leg": message.leg,
                "channel": message.channel, "detail": dict(message.detail)}
    if isinstance(message, TreatmentDone):
        return {"type": message.TYPE, "handle": message.handle, "event": message.EVENT,
                "ok": message.ok, "digits": message.digits}
    if isinstance(message, Abandoned):
        return {"type": message.TYPE, "handle": message.handle, "event": message.EVENT}
    if isinstance(message, DefaultRouted):
        return {"type": message.TYPE, "handle": message.handle, "event": message.EVENT,
                "reason": message.reason}
    if isinstance(message, AgentState):
        return {"type": message.TYPE, "tenant": message.tenant, "device": message.device,
                "available": message.available, "state": message.state,
                "paused": message.paused, "idle_since": message.idle_since}
    if isinstance(message, Error):
        return {"type": message.TYPE, "handle": message.handle, "code": message.code,
                "message": message.message}
    if isinstance(message, State):
        return {"type": message.TYPE, "tenant": message.tenant, "state": dict(message.state)}
    return _hello_wire(message)


def _with_trace(out: JsonObject, trace: TraceInfo | None) -> JsonObject:
    if trace is not None:
        out["trace"] = {"rule": trace.rule, "why": trace.why, "inputs": dict(trace.inputs)}
    return out


def _caller_wire(call: CallerData) -> JsonObject:
    out: JsonObject = {"ani": call.ani, "ani_name": call.ani_name, "dnis": call.dnis,
                       "dnid": call.dnid, "language": call.language, "uniqueid": call.uniqueid}
    if call.previous is not None:
        out["previous"] = {"target": str(call.previous.target), "status": call.previous.status}
    return out


def _hello_wire(hello: Hello) -> JsonObject:
    out: JsonObject = {"type": hello.TYPE, "v": hello.v, "vts": hello.vts}
    if hello.minor:
        out["minor"] = hello.minor
    if hello.events is not None:
        out["events"] = list(hello.events)
    if hello.tenants:
        out["tenants"] = {
            name: {"timezone": t.timezone, "holidays": list(t.holidays),
                   "targets": list(t.targets), "extensions": dict(t.extensions),
                   "rules": [dict(r) for r in t.rules],
                   **({"ring_time": t.ring_time} if t.ring_time else {})}
            for name, t in hello.tenants.items()}
    return out
