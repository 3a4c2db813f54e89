"""Channel strings: which endpoint a channel names, and whether run-time values can move it.

A dial string (`Dial`, `Page`: `&`-separated channels; `Originate`, a queue member's
interface: one channel) names each channel `Tech/resource`. The endpoint is the part of
the resource before its first `/` (the rest is a SIP URI or Local options) and after
its first `@` (`PJSIP/user@endpoint`, as chan_pjsip and most drivers read it); for
`Local/exten@context` it is the context, which `targets` already follows. Asterisk
substitutes variables *before* it splits on `&`, `/` and `@`, so a run-time value is
harmless only when it is *bounded*: provably free of every character of
`taint.DIAL_UNSAFE`. Bounded are: `${EXTEN}` under a pattern of safe characters
(`taint.pattern_is_safe`); `FILTER` with a literal set free of those characters;
functions that return numbers; a substring `${X:o:l}` of a bounded variable; `$[...]`
of bounded operands; the bridge's own variables (`agi.variables.WRITABLE_VARIABLES`,
which the intermediary validates to `[0-9A-Za-z_+*#-]`) unless the dialplan assigns
them something unbounded (AB_DIAL, whole channels of the tenant's own devices, may stand
as a dial string when the dialplan only ever clears it: `bridge_dial_only`); and any
variable that the dialplan assigns at least once and
only ever bounded text (Set/MSet anywhere in the files read, to a least fixed point, so
another tenant's `Set(__X=...)` counts too). Everything else (Gosub's ARGn, variables
set by other applications or never set) is unbounded. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ami_bridge.agi.variables import AB_DIAL, WRITABLE_VARIABLES
from ami_bridge.dialplan.parser import Step
from ami_bridge.dialplan.syntax import (
    expansions,
    filter_charset,
    is_dynamic,
    split_function,
    split_top,
)
from ami_bridge.dialplan.taint import DIAL_UNSAFE, NUMERIC_FUNCTIONS, pattern_is_safe
from ami_bridge.dialplan.targets import Call, calls

# Variables only the bridge writes (over AGI, validated by the intermediary).
BRIDGE_VARIABLES = frozenset(WRITABLE_VARIABLES)


@dataclass(frozen=True)
class Channel:
    """One `Tech/resource` of a dial string, as written."""

    text: str
    tech: str
    resource: str

    @property
    def is_local(self) -> bool:
        return self.tech.strip().lower() == "local"

    @property
    def endpoint(self) -> str:
        """The endpoint (or, for Local, the context) the channel names; may be dynamic."""
        head = split_top(self.resource, "/", 1)[0]
        parts = split_top(head, "@", 1)
        return (parts[1] if len(parts) > 1 else ("" if self.is_local else parts[0])).strip()


def channel_list(text: str, many: bool) -> list[Channel | str]:
    """The channels of a dial string; a piece without a `/` comes back as text."""
    pieces = split_top(text, "&") if many else [text]
    found: list[Channel | str] = []
    for piece in (p.strip() for p in pieces):
        parts = split_top(piece, "/", 1)
        if len(parts) == 2:
            found.append(Channel(piece, parts[0].strip(), parts[1].strip()))
        elif piece:
            found.append(piece)
    return found


@dataclass(frozen=True)
class Bounds:
    """What is known bounded where a step runs: its extension pattern, the variables."""

    exten_safe: bool
    variables: frozenset[str]
    # Whether `${AB_DIAL}` may stand for whole channels: the bridge writes it (a personal
    # venue's `phones`, from the tenant's own `extensions`) and no dialplan line in the
    # files read sets it to anything but empty (`bridge_dial_only`).
    bridge_dial: bool = False


def literal_text(text: str) -> str:
    """`text` without its top-level `${...}`/`$[...]`."""
    out, last = [], 0
    for exp in expansions(text):
        out.append(text[last:exp.start])
        last = exp.end
    out.append(text[last:])
    return "".join(out)


def unbounded(text: str, bounds: Bounds) -> list[str]:
    """The run-time values of `text` that may hold a dial-string separator."""
    found: list[str] = []
    for exp in expansions(text):
        if exp.kind == "[":
            found += [exp.full] if unbounded(exp.inner, bounds) else []
            continue
        func = split_function(exp.inner)
        if func is None:
            name = exp.inner.split(":", 1)[0].strip().lstrip("_").upper()
            if is_dynamic(name) or not _variable_bounded(name, bounds):
                found.append(exp.full)
            continue
        fname, args, _ = func
        upper = fname.upper()
        if upper == "FILTER":
            allowed = filter_charset(split_top(args, ",", 1)[0].strip())
            if allowed is None or allowed & DIAL_UNSAFE:
                found.append(exp.full)
        elif upper not in NUMERIC_FUNCTIONS:
            found.append(exp.full)
    return found


def _variable_bounded(name: str, bounds: Bounds) -> bool:
    if name == "EXTEN":
        return bounds.exten_safe
    return name in bounds.variables


def text_bounded(text: str, bounds: Bounds) -> bool:
    """True when neither the literal text nor any run-time value holds a separator."""
    return not set(literal_text(text)) & DIAL_UNSAFE and not unbounded(text, bounds)


def _assignments(call: Call) -> list[tuple[str, str]]:
    pairs = [call.data] if call.name == "set" else list(call.args) \
        if call.name == "mset" else []
    found = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lstrip("_")
        if sep and name and "(" not in name and not is_dynamic(name):
            found.append((name.upper(), value.strip()))
    return found


def bridge_dial_only(steps: Iterable[Step]) -> bool:
    """True when every Set/MSet of AB_DIAL in `steps` clears it: its only value is then
    the bridge's, which the intermediary takes from the venue tenant's own devices."""
    return all(not value for step in steps for call in calls(step)
               for name, value in _assignments(call) if name == AB_DIAL)


def bounded_variables(steps: Iterable[Step]) -> frozenset[str]:
    """Variables whose every Set/MSet in `steps` assigns bounded text (see header)."""
    assigned: dict[str, list[tuple[str, bool]]] = {}
    for step in steps:
        safe = pattern_is_safe(step.pattern)
        for call in calls(step):
            for name, value in _assignments(call):
                assigned.setdefault(name, []).append((value, safe))
    candidates = set(assigned) | BRIDGE_VARIABLES
    known: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name in sorted(candidates - known):
            values = assigned.get(name, [])
            if not values and name not in BRIDGE_VARIABLES:
                continue
            if all(text_bounded(v, Bounds(safe, frozenset(known))) for v, safe in values):
                known.add(name)
                changed = True
    return frozenset(known)
