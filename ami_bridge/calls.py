"""One waiting call as the intermediary sees it: its AGI side, its history, its default.

The intermediary (ami_bridge.intermediary) keeps a `Pending` per waiting call, timed on
the `Scheduler` it is given, and tells its AGI side how it leaves the venue
(`Responder.dispose` with a `Disposition`) or what to play meanwhile (`Responder.treat`
with a `Treatment`, from a VTS's `Treat` by `treatment_for`); `caller_data` is all a
VTS learns of the call from its AGI environment, read by the dialplan contract
(ami_bridge.agi.variables), and `check_namespace` whether a route target is the
tenant's own. `CallHistories` remembers per channel unique id what earlier route
requests of the same call did (a call whose target was busy or did not answer comes
back as a new AGI session), bounded in size and age. `default_route` is the policy for
a call leaving by its venue's default route: the venue's `default_targets` in turn,
skipping those this call already tried, then reject; with no list the dialplan's own
default label. Every default route is a redirection; more than the venue's
`redirect_limit` in a row (a VTS instruction resets the count) rejects the call.
No I/O, no clock of its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ami_bridge.agi.variables import (
    AB_LAST,
    ACTION_DEFAULT,
    ACTION_REJECT,
    ACTION_ROUTE,
    DIAL_STATUS_RE,
    DIALSTATUS,
    agi_arg,
)
from ami_bridge.config import TenantConfig, VenueConfig
from ami_bridge.namespace import (
    KIND_EXTENSION,
    KIND_PHONES,
    KIND_QUEUE,
    KIND_VOICEMAIL,
    MAX_PHONES,
)
from ami_bridge.ownership import prompt_roots
from ami_bridge.personal.model import User
from ami_bridge.tenants.messages import (
    CallerData,
    Previous,
    Reject,
    RouteTo,
    TakeDefault,
    Target,
    TraceInfo,
    Treat,
)

# Caller data forwarded to a VTS is cut to this many characters.
MAX_CALLER_FIELD = 80
# Channels whose routing history is remembered (re-entries after busy / no answer).
# A call that comes back after an hour is treated as new; 50,000 covers an hour at
# more than ten calls per second.
MAX_CALL_HISTORY = 50_000
CALL_HISTORY_TTL = 3600.0
# A treatment needs at least this much router time left to be worth starting.
MIN_TREATMENT_MS = 200


@dataclass(frozen=True)
class Disposition:
    """How a call leaves the venue (`agi.variables.ACTIONS`)."""

    action: str  # "route" | "reject" | "default"
    target: Target | None = None  # for a route
    cause: str = ""  # reject cause, or why the call was default-routed
    dial_timeout: int = 0  # seconds; 0: the dialplan's own
    dial: str = ""  # a `phones` target's devices joined by '&' (AB_DIAL)


@dataclass(frozen=True)
class Treatment:
    prompt: str = ""  # sound path, tenant prefix applied
    moh_class: str = ""  # start music on hold in this class
    collect_digits: int = 0
    timeout_ms: int = 0


TreatmentDone = Callable[[str | None], None]  # digits, or None when it failed


class Responder(Protocol):
    """The AGI side of one pending call."""

    def dispose(self, disposition: Disposition) -> None: ...

    def treat(self, treatment: Treatment, done: TreatmentDone) -> None: ...


@dataclass(slots=True)
class CallHistory:
    # Up to MAX_CALL_HISTORY of these live at once, one per call of the last hour: slots
    # and a shared empty frozenset (most calls never take a default target) keep one at
    # about a third of a dict-backed one with its own empty set (the fault run's soak,
    # docs/reliability.md, saw the bridge's RSS grow ~0.85 KB per call before this).
    requests: int = 0
    redirects: int = 0
    tried_defaults: frozenset[str] = frozenset()
    seen: float = 0.0


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """A monotonic clock with timers: the asyncio loop in the daemon, a fake in tests."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer: ...


@dataclass
class Asking:
    """A personal call popped up on workstations, waiting for a choice (an `ask`)."""

    otherwise: RouteTo | Reject | TakeDefault  # the user's rules, if nobody chooses
    asked: tuple[str, ...]  # user ids whose workstations got the pop
    trace: TraceInfo | None = None
    taken_by: str = ""  # set when a workstation's choice took the call


@dataclass
class Pending:
    handle: str
    venue: VenueConfig
    responder: Responder
    history: CallHistory
    deadline: float  # on the intermediary's clock
    call: CallerData = field(default_factory=CallerData)
    user: User | None = None  # a personal venue's dialled user (None in other venues)
    timer: Timer | None = None
    treating: bool = False
    asking: Asking | None = None
    started: float = 0.0  # its route request arrived (the latency clock, for the metrics)


def treatment_for(tenant: TenantConfig, message: Treat, remaining_s: float,
                  others: Iterable[str] = ()) -> Treatment:
    """The AGI-side `Treatment` for a VTS's, or ValueError if too little time is left or
    the prompt is another tenant's (`others`: the other tenants' names)."""
    remaining_ms = int(remaining_s * 1000)
    if message.prompt and not tenant.prompts:
        # Without a prompt directory of its own a tenant plays from the shared sounds,
        # never from another tenant's directory (ownership.prompt_roots).
        for other in others:
            for root in prompt_roots(other):
                if message.prompt == root or message.prompt.startswith(root + "/"):
                    raise ValueError(f"prompt {message.prompt!r} is tenant {other}'s")
    if remaining_ms < MIN_TREATMENT_MS:
        raise ValueError(f"only {remaining_ms} ms of router time left for a treatment")
    if message.moh:
        return Treatment(moh_class=tenant.moh_class)
    path = f"{tenant.prompts}/{message.prompt}" if tenant.prompts else message.prompt
    # The overall router timeout still holds: collection ends in time for the default.
    return Treatment(prompt=path, collect_digits=message.collect_digits,
                     timeout_ms=min(message.timeout_ms, remaining_ms - MIN_TREATMENT_MS // 2))


def check_namespace(tenant: TenantConfig, target: Target, *, personal: bool = False) -> None:
    """Raise ValueError unless `target` lies in the tenant's declared namespace; the
    `phones` and `voicemail` kinds only in a personal venue (`personal`)."""
    if target.kind in (KIND_PHONES, KIND_VOICEMAIL):
        if not personal or tenant.personal is None:
            raise ValueError(f"target kind {target.kind} is for personal venues only")
        if target.kind == KIND_VOICEMAIL:
            inside, key = target.value in tenant.personal.numbers, "personal.numbers"
        else:
            outside = [e for e in target.value.split("&") if e not in tenant.extensions]
            inside, key = not outside, "extensions"
    elif target.kind == KIND_EXTENSION:
        inside, key = target.value in tenant.targets, "targets"
    elif target.kind == KIND_QUEUE:
        inside, key = target.value in tenant.queues, "queues"
    else:
        inside = any(target.value.startswith(p) for p in tenant.external_prefixes)
        key = "external_prefixes"
    if not inside:
        raise ValueError(f"target {target} is outside tenant {tenant.name}'s namespace "
                         f"(its {key})")


def dial_for(tenant: TenantConfig, target: Target) -> str:
    """AB_DIAL for a `phones` target: its extensions' devices from the tenant file."""
    return "&".join(tenant.extensions[e] for e in target.value.split("&")) \
        if target.kind == KIND_PHONES else ""


def personal_default(tenant: TenantConfig, user: User | None, bindings: tuple[str, ...],
                     previous: Previous | None) -> Disposition:
    """How a personal venue's call leaves when its VTS cannot decide (not connected,
    silent, refused): the user's phones for the ring time, then voicemail, then the end.
    With no such user: the dialplan's own fallback (the number's home phone, then its
    mailbox)."""
    personal = tenant.personal
    if user is None or personal is None:
        return Disposition(ACTION_DEFAULT, cause="no-user")
    bound = tuple(e for e in bindings if e in tenant.extensions)[:MAX_PHONES]
    if previous is None and bound:
        phones = Target(KIND_PHONES, "&".join(bound))
        return Disposition(ACTION_ROUTE, target=phones, dial_timeout=personal.ring_time,
                           dial=dial_for(tenant, phones))
    if previous is None or previous.target.kind != KIND_VOICEMAIL:
        return Disposition(ACTION_ROUTE, target=Target(KIND_VOICEMAIL, user.number))
    return Disposition(ACTION_REJECT, cause="congestion")  # back from voicemail: end


def caller_data(env: Mapping[str, str]) -> CallerData:
    """What a VTS learns of a call from its AGI environment, each field cut short."""
    def cut(key: str) -> str:
        return env.get(key, "")[:MAX_CALLER_FIELD]

    # A call that comes back to the venue after its target failed carries what it tried
    # (the route script's arguments: AB_LAST as KIND:VALUE, DIALSTATUS).
    last, status = cut(agi_arg(AB_LAST)), cut(agi_arg(DIALSTATUS))
    previous = None
    if last and DIAL_STATUS_RE.fullmatch(status or "X"):
        try:
            previous = Previous(Target.parse(last), status)
        except ValueError:
            previous = None  # not what the venue contract passes: nothing to report
    return CallerData(ani=cut("agi_callerid"), ani_name=cut("agi_calleridname"),
                      dnis=cut("agi_extension"), dnid=cut("agi_dnid"),
                      language=cut("agi_language"), uniqueid=cut("agi_uniqueid"),
                      previous=previous)


class CallHistories:
    """Channel unique id -> its `CallHistory`, oldest forgotten first."""

    def __init__(self, *, max_calls: int = MAX_CALL_HISTORY,
                 ttl: float = CALL_HISTORY_TTL) -> None:
        self._max, self._ttl = max_calls, ttl
        self._calls: OrderedDict[str, CallHistory] = OrderedDict()

    def get(self, uniqueid: str, now: float) -> CallHistory:
        """The call's history (new if unknown or without a unique id), marked seen now."""
        while self._calls:
            oldest = next(iter(self._calls.values()))
            if len(self._calls) < self._max and now - oldest.seen < self._ttl:
                break
            self._calls.popitem(last=False)
        history = self._calls.pop(uniqueid, None) if uniqueid else None
        history = history or CallHistory()
        history.seen = now
        if uniqueid:
            self._calls[uniqueid] = history
        return history


def default_route(venue: VenueConfig, history: CallHistory,
                  cause: str) -> tuple[Disposition, str]:
    """A call leaves by the venue's default route: its disposition, and when that is a
    reject, why (for the log; "" otherwise). Counts the redirection in `history`."""
    history.redirects += 1
    if history.redirects > venue.redirect_limit:
        return (Disposition(ACTION_REJECT, cause="congestion"),
                f"{history.redirects - 1} redirections in a row")
    if not venue.default_targets:
        return Disposition(ACTION_DEFAULT, cause=cause), ""
    for target in venue.default_targets:
        if target not in history.tried_defaults:
            history.tried_defaults = history.tried_defaults | {target}
            return Disposition(ACTION_ROUTE, target=Target.extension(target), cause=cause), ""
    return Disposition(ACTION_REJECT, cause="congestion"), "every default target tried"
