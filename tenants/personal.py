"""A user's own routing rules: validation at write time, evaluation at call time.

STUB: the interface only (see /work/briefs/personal-design.md); the RULES helper fills it.
Pure: no I/O, no clock of its own, no asyncio.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ami_bridge.tenants.messages import Target


class PortionError(ValueError):
    """A portion refused at write time: `field` is a dotted path (`rules[2].target`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class RuleSet:
    """A validated portion body."""

    rules: tuple[Mapping[str, Any], ...] = ()
    vip: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    saved: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rules": [dict(r) for r in self.rules], "vip": list(self.vip),
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
    rule: str  # "#1 night", "default"
    why: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    step: int = 0
    after: str = ""


@dataclass(frozen=True)
class Step:
    action: str  # "route" | "reject"
    target: Target | None
    trace: Trace
    dial_timeout: int = 0
    cause: str = ""


def parse_portion(raw: object, *, extensions: Collection[str] | None,
                  external_prefixes: Sequence[str], ring_time: int) -> RuleSet:
    """Validate a portion body; `extensions=None` (in the VTS, from the bridge) skips the
    tenant-namespace checks but not the shape checks."""
    raise NotImplementedError


def evaluate(rules: RuleSet, call: PersonalCall, now: dt.datetime, *, timezone: str,
             holidays: Sequence[str], ring_time: int) -> Step:
    raise NotImplementedError
