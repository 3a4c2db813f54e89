"""Replay: what a candidate rule set would have done with calls already recorded.

Before a change is applied, its author asks "which of the recent calls would go
elsewhere?". Two kinds of candidate. `replay`: a user's portion, on the user's recorded
personal routing decisions (`TraceRecord`): the caller (`call["ani"]`,
`call["ani_name"]`), the dialled personal number (`call["number"]`), the bindings then
(`call["bindings"]`, extensions joined by `&`), what was tried before (`previous`,
"KIND:VALUE STATUS") and when (`at`), through the rule module's `evaluate`.
`replay_tenant`: a tenant's routing protocol (`tenants.routing`), on the decisions its
VTS made in the tenant's venues (records with no user): caller, dialled number,
`previous`, the digits a treatment collected (`inputs["digits"]`) and `at`. Both list
the decisions whose outcome would differ from the one recorded. Records that lack those
inputs (another user's, decisions the bridge made itself without asking the VTS, a
malformed `previous`) are skipped, not guessed. What the trace does not hold is said,
not invented: a tenant decision that depends on selection state or agent state (round
robin, split, longest idle, `agents_available`) is evaluated with fresh cursors, a
fixed-seed random source and no agent state, and its change is marked `stateful`; a
candidate treatment is assumed to be answered with the digits the caller entered in
the recorded call (`treatment` on the change names it); where the record holds none and
a caller entering none would not end where the recorded call did, the change reads
"treatment PROMPT": what the caller would press is unknown.
Pure: no I/O, no clock; the personal `evaluate` is passed in so the caller picks the
implementation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ami_bridge.personal.model import TraceRecord
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.personal import PersonalCall, RuleSet, Step
from ami_bridge.tenants.routing import CallInfo, Decision, RoutingProtocol, Rule, matches

Evaluate = Callable[..., Step]  # tenants.personal.evaluate's signature


@dataclass(frozen=True)
class Change:
    """One recorded decision whose outcome the candidate would change."""

    uniqueid: str
    at: float
    was: str  # the recorded outcome: "route KIND:VALUE", "reject CAUSE", "default CAUSE"
    would: str  # the candidate's outcome, same spelling
    rule_was: str
    rule_would: str
    # The candidate's decision depends on state the trace does not hold (round-robin
    # cursors, a random split, agents' availability or idle times): `would` is one
    # possible answer, not the answer.
    stateful: bool = False
    # The candidate first plays this treatment ("moh" for music on hold); `would` is
    # what follows when the caller enters the digits entered in the recorded call.
    treatment: str = ""

    def to_json(self) -> dict[str, object]:
        return {"uniqueid": self.uniqueid, "at": self.at, "was": self.was,
                "would": self.would, "rule_was": self.rule_was,
                "rule_would": self.rule_would, "stateful": self.stateful,
                "treatment": self.treatment}


@dataclass(frozen=True)
class Replay:
    changed: tuple[Change, ...]
    replayed: int  # decisions evaluated (skipped records not counted)


def outcome(step: Step) -> str:
    """A Step spelled the way a trace records its outcome."""
    if step.action == "route" and step.target is not None:
        return f"route {step.target.kind}:{step.target.value}"
    return f"reject {step.cause}"


def personal_call(record: TraceRecord) -> PersonalCall | None:
    """The rule module's input as recorded, or None when the record cannot be replayed."""
    call = record.call
    if not record.user_id or not call.get("number"):
        return None
    previous: tuple[Target, str] | None = None
    if record.previous:
        target_text, _, status = record.previous.partition(" ")
        try:
            previous = (Target.parse(target_text), status)
        except ValueError:
            return None
    bindings = tuple(b for b in call.get("bindings", "").split("&") if b)
    return PersonalCall(ani=call.get("ani", ""), number=call["number"], bindings=bindings,
                        ani_name=call.get("ani_name", ""), previous=previous)


def replay(records: Sequence[TraceRecord], candidate: RuleSet, *, user_id: str,
           timezone: str, holidays: Sequence[str], ring_time: int,
           evaluate: Evaluate) -> Replay:
    """Evaluate `candidate` on each of the user's recorded decisions, oldest first."""
    changed: list[Change] = []
    replayed = 0
    for record in sorted(records, key=lambda r: (r.at, r.request)):
        call = personal_call(record) if record.user_id == user_id else None
        if call is None:
            continue
        now = dt.datetime.fromtimestamp(record.at, dt.UTC)
        step = evaluate(candidate, call, now, timezone=timezone, holidays=holidays,
                        ring_time=ring_time)
        replayed += 1
        would = outcome(step)
        if would != record.outcome:
            changed.append(Change(record.uniqueid, record.at, record.outcome, would,
                                  record.rule, step.trace.rule))
    return Replay(tuple(changed), replayed)


# -- a tenant's routing protocol ------------------------------------------------------------

# Seed of the random source a replayed percentage split draws from: fixed, so a replay
# answers the same twice (the recorded draw itself is not in the trace).
SPLIT_SEED = 0
# How the intermediary spells the default route a VTS asked for (`_record`: "default
# route (CAUSE)" before the VTS's own sentence): a decision of the protocol, whatever
# the venue's default then did.
_VTS_DEFAULT_WHY = "default route (vts)"
VTS_DEFAULT = "default vts"  # such a decision, spelled like a trace outcome
# Rules the bridge wrote itself (timeouts, a lost VTS, a refused disposition, the loop
# guard) or none at all (abandoned): the protocol did not decide those.
_NOT_THE_PROTOCOL = frozenset({"", "bridge"})
_STATEFUL_STRATEGIES = frozenset({"round_robin", "split"})


def recorded_decision(record: TraceRecord) -> str | None:
    """What the tenant's protocol decided, spelled like an outcome; None: it did not."""
    if record.user_id or record.rule in _NOT_THE_PROTOCOL:
        return None
    if record.why.startswith(_VTS_DEFAULT_WHY):
        return VTS_DEFAULT
    if record.outcome.startswith(("route ", "reject ")):
        return record.outcome
    return None


def tenant_call(record: TraceRecord) -> CallInfo | None:
    """A tenant venue's route request as recorded, before any treatment; None when the
    record cannot be replayed. The digits are not in it: see `recorded_digits`."""
    dnis = record.call.get("dnis", record.inputs.get("dnis"))
    if dnis is None:
        return None
    previous: Target | None = None
    status = ""
    if record.previous:
        target_text, _, status = record.previous.partition(" ")
        try:
            previous = Target.parse(target_text)
        except ValueError:
            return None
    return CallInfo(ani=record.call.get("ani", ""), dnis=dnis, previous_target=previous,
                    previous_status=status)


def recorded_digits(record: TraceRecord) -> str:
    """The digits a treatment collected in the recorded call ("" if none or none ran)."""
    return record.inputs.get("digits", "")


def decision_outcome(decision: Decision) -> str:
    """A routing protocol's Decision spelled the way a trace records its outcome."""
    if decision.action == "route" and decision.target is not None:
        return f"route {decision.target}"
    if decision.action == "reject":
        return f"reject {decision.cause}"
    if decision.action == "treatment":
        return f"treatment {treatment_name(decision)}"
    return VTS_DEFAULT


def treatment_name(decision: Decision) -> str:
    return decision.prompt or ("moh" if decision.moh else "silence")


def depends_on_state(protocol: RoutingProtocol, call: CallInfo, now: dt.datetime,
                     decision: Decision) -> bool:
    """Whether state the trace does not hold could have changed `decision`: a rule that
    matched on the call up to the deciding one looks at agents, or the deciding rule
    picks among several targets by cursor or chance."""
    local = now.astimezone(protocol.timezone)
    for rule in protocol.rules:
        if rule.action == "treatment" and call.treated:
            continue
        if not matches(rule, call, local, protocol.holidays):
            continue
        if rule.agents_available is not None:
            return True
        if rule.action == "route" and rule.strategy == "longest_idle":
            return True  # who is free and who idled longest: agent state
        if rule.name == decision.rule:
            return _picks(rule, call)
    return False


def _picks(rule: Rule, call: CallInfo) -> bool:
    if rule.action != "route" or len(rule.route_targets) < 2:
        return False
    if rule.overflow_after:  # the list is walked in order, from `previous`
        return False
    return rule.strategy in _STATEFUL_STRATEGIES


@dataclass(frozen=True)
class _Answer:
    would: str
    rule: str
    stateful: bool
    treatment: str


def _tenant_answer(protocol: RoutingProtocol, call: CallInfo, digits: str,
                   now: dt.datetime, rng: random.Random, recorded: str,
                   recorded_rule: str) -> _Answer:
    """The candidate's answer to one route request, as the VTS runtime would reach it:
    evaluate; after a treatment evaluate again, the caller entering `digits`."""
    first = protocol.evaluate(call, now, rng)
    if first.action != "treatment":
        return _Answer(decision_outcome(first), first.rule,
                       depends_on_state(protocol, call, now, first), "")
    treated = dataclasses.replace(call, treated=True,
                                  digits=digits if first.collect_digits else "")
    then = protocol.evaluate(treated, now, rng)
    stateful = depends_on_state(protocol, treated, now, then)
    answer = _Answer(decision_outcome(then), then.rule, stateful, treatment_name(first))
    if first.collect_digits and not digits and not _same(answer, recorded, recorded_rule):
        # No digits in the record: whether the caller would enter none is unknown, so the
        # change is the menu itself, not a guess at what follows it.
        return _Answer(decision_outcome(first), first.rule, stateful, answer.treatment)
    return answer


def _same(answer: _Answer, recorded: str, recorded_rule: str) -> bool:
    if answer.would != recorded:
        return False
    return recorded != VTS_DEFAULT or answer.rule == recorded_rule


def replay_tenant(records: Sequence[TraceRecord], protocol: RoutingProtocol, *,
                  seed: int = SPLIT_SEED) -> Replay:
    """Evaluate the candidate `protocol` on each of the tenant venues' recorded decisions,
    oldest first, at the time each was made. A change is listed when the candidate's
    outcome differs, or when both take the default route and by a different rule."""
    # Fresh selection state: the caller's protocol object is left as it was.
    candidate = dataclasses.replace(protocol, _cursors={})
    rng = random.Random(seed)
    changed: list[Change] = []
    replayed = 0
    for record in sorted(records, key=lambda r: (r.at, r.request)):
        recorded = recorded_decision(record)
        call = tenant_call(record) if recorded is not None else None
        if recorded is None or call is None:
            continue
        now = dt.datetime.fromtimestamp(record.at, dt.UTC)
        answer = _tenant_answer(candidate, call, recorded_digits(record), now, rng,
                                recorded, record.rule)
        replayed += 1
        if not _same(answer, recorded, record.rule):
            changed.append(Change(record.uniqueid, record.at, recorded, answer.would,
                                  record.rule, answer.rule, stateful=answer.stateful,
                                  treatment=answer.treatment))
    return Replay(tuple(changed), replayed)
