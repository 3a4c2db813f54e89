"""Replay: what a candidate portion would have done with the calls a user already had.

A user about to change his or her rules asks "which of my recent calls would go
elsewhere?". Each recorded personal routing decision (`TraceRecord`) keeps the inputs
the rule module saw: the caller (`call["ani"]`, `call["ani_name"]`), the dialled
personal number (`call["number"]`), the bindings then (`call["bindings"]`, extensions
joined by `&`), what was tried before (`previous`, "KIND:VALUE STATUS") and when
(`at`). `replay` runs each of them through the rule module's `evaluate` with the
candidate rules and lists the decisions whose outcome would differ from the one
recorded. Records that lack those inputs (tenant-protocol venues, another user's, a
malformed `previous`) are skipped, not guessed. Pure: no I/O, no clock; `evaluate` is
passed in so the caller picks the implementation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ami_bridge.personal.model import TraceRecord
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.personal import PersonalCall, RuleSet, Step

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

    def to_json(self) -> dict[str, object]:
        return {"uniqueid": self.uniqueid, "at": self.at, "was": self.was,
                "would": self.would, "rule_was": self.rule_was,
                "rule_would": self.rule_would}


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
