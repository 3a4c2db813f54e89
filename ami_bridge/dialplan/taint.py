"""Caller-controlled data in dial strings: sources, the FILTER sanitiser, Set() tracking.

A *source* is a value the caller (or the far end's SIP stack) chooses: `${EXTEN}` and
its substrings, every `CALLERID(...)` item but the presentation/type ones,
`CONNECTEDLINE()`, `REDIRECTING()`, SIP headers (`PJSIP_HEADER()`, `SIP_HEADER()`, ...),
the old `${CALLERIDNUM}`-style variables, `CDR(src/dst/clid/dnid)`, and `CHANNEL(item)`
unless the item is one the platform sets (`CHANNEL_SAFE_ITEMS`: name, language,
musicclass, accountcode, ...; `CHANNEL(pjsip,...)`, `CHANNEL(useragent)` and
`CHANNEL(exten)` are caller data). `${EXTEN}` is accepted where the step's extension
pattern admits only characters harmless in a dial string: a literal extension, or a
`_` pattern of X, Z, N, `[...]` classes and literal characters, without `.` or `!`
(so `_XXXX` is safe, `_X.` is not). A value is clean inside `${FILTER(set,...)}` when
the set is literal and holds none of `DIAL_UNSAFE`, and inside functions that only
return numbers or booleans (`LEN`, `EXISTS`, ...); any other function of a tainted
value is tainted. A variable becomes tainted when a `Set()`/`MSet()` of the same
context (or of a template it inherits) assigns it from tainted text, to a fixed point;
values passed across contexts (Gosub arguments, inheritance) are not tracked.
*Sinks* are the arguments that are dial strings or pick a channel or queue:
`DIAL_SINKS`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ami_bridge.dialplan.parser import Step
from ami_bridge.dialplan.syntax import (
    Expansion,
    expansions,
    filter_charset,
    is_dynamic,
    split_function,
    split_top,
)
from ami_bridge.dialplan.targets import Call, calls

# Characters that change what a dial string means: another channel (&), the next
# argument (,), technology/resource and Local options (/), host or context (@),
# option arguments and separators ( ) ^ |, expression syntax if the value is evaluated
# again ($ { } [ ]), quoting and escapes, and any whitespace or control character.
DIAL_UNSAFE = frozenset("&,/@()^|${}[]\\\"';`") | frozenset(chr(c) for c in range(33)) \
    | frozenset({"\x7f"})
# A caller-chosen extension is harmless when it can only hold these.
_EXTEN_SAFE = frozenset(string.ascii_letters + string.digits + "+*#-._")
# Application (lowercase) -> indexes of its arguments that are dial strings/selectors.
DIAL_SINKS: Mapping[str, tuple[int, ...]] = {
    "dial": (0,), "queue": (0,), "addqueuemember": (1,), "removequeuemember": (1,),
    "originate": (0,), "page": (0,), "chanspy": (0,), "extenspy": (0,),
    "pickup": (0,), "pickupchan": (0,), "channelredirect": (0,), "bridge": (0,),
}
SOURCE_VARIABLES = frozenset({
    "EXTEN", "CALLERIDNUM", "CALLERIDNAME", "CALLERANI", "DNID", "RDNIS", "SIPCALLID",
    "SIPURI", "SIPDOMAIN", "SIPUSERAGENT",
})
SOURCE_FUNCTIONS = frozenset({
    "CALLERID", "CONNECTEDLINE", "REDIRECTING", "PJSIP_HEADER", "PJSIP_HEADERS",
    "SIP_HEADER", "SIP_HEADERS", "PJSIP_PARSE_URI", "PJSIP_PARSE_URI_FROM",
})
# CALLERID()/CONNECTEDLINE() items that are enumerations, not caller text.
_ENUM_ITEMS = frozenset({"pres", "name-pres", "num-pres", "ton", "num-plan",
                         "name-valid", "num-valid", "subaddr-valid"})
CHANNEL_SAFE_ITEMS = frozenset({
    "name", "language", "musicclass", "accountcode", "peeraccount", "linkedid",
    "uniqueid", "channeltype", "state", "tenantid", "amaflags", "callgroup",
    "pickupgroup", "namedcallgroup", "namedpickupgroup", "parkinglot", "userfield",
    "hangupsource", "max_forwards", "endpoint", "audioreadformat", "audiowriteformat",
    "audionativeformat", "videonativeformat", "hangup_handler_stack", "callid",
})
_CDR_SOURCES = frozenset({"src", "dst", "clid", "dnid"})
# Functions whose result is a number or a boolean whatever their argument.
NUMERIC_FUNCTIONS = frozenset({"LEN", "EXISTS", "ISNULL", "REGEX", "DIALPLAN_EXISTS",
                               "FIELDQTY", "GROUP_COUNT", "GROUP_MATCH_COUNT",
                               "VALID_EXTEN", "MATH"})


@dataclass(frozen=True)
class Taint:
    """A caller-controlled value: the source as written, and how it got here."""

    expr: str
    via: str = ""  # e.g. "set from ${EXTEN} at tenants/acme.conf:12"

    def describe(self) -> str:
        return f"{self.expr} ({self.via})" if self.via else self.expr


def pattern_is_safe(pattern: str) -> bool:
    """True when every extension `pattern` matches is made of `_EXTEN_SAFE` characters."""
    pattern = split_top(pattern, "/", 1)[0]  # drop a caller-id match
    if not pattern.startswith("_"):
        return bool(pattern) and set(pattern) <= _EXTEN_SAFE
    body, i = pattern[1:], 0
    while i < len(body):
        ch = body[i]
        if ch in ".!":
            return False
        if ch == "[":
            end = body.find("]", i)
            if end < 0:
                return False
            chars = filter_charset(body[i + 1:end])
            if chars is None or not chars <= _EXTEN_SAFE:
                return False
            i = end + 1
            continue
        if ch.upper() not in "XZN" and ch not in _EXTEN_SAFE:
            return False
        i += 1
    return True


@dataclass(frozen=True)
class Scope:
    """What taint analysis knows at one step: its pattern and the tainted variables."""

    exten_safe: bool
    variables: Mapping[str, Taint]


def find_taint(text: str, scope: Scope) -> list[Taint]:
    """The caller-controlled values that reach `text` unfiltered."""
    found: list[Taint] = []
    for exp in expansions(text):
        found += _expansion(exp, scope)
    return found


def _variable(name: str, expr: str, scope: Scope) -> list[Taint]:
    upper = name.strip().lstrip("_").upper()
    if upper == "EXTEN":
        return [] if scope.exten_safe else [Taint(expr)]
    if upper in SOURCE_VARIABLES:
        return [Taint(expr)]
    if upper in scope.variables:
        taint = scope.variables[upper]
        return [Taint(expr, f"set from {taint.expr} at {taint.via}")]
    return []


def _expansion(exp: Expansion, scope: Scope) -> list[Taint]:
    if exp.kind == "[":
        return find_taint(exp.inner, scope)
    func = split_function(exp.inner)
    if func is None:
        if is_dynamic(exp.inner):
            return find_taint(exp.inner, scope)
        return _variable(exp.inner.split(":", 1)[0], exp.full, scope)
    name, args, _ = func
    upper = name.upper()
    first = split_top(args, ",", 1)[0].strip()
    if upper == "FILTER":
        allowed = filter_charset(first)
        if allowed is not None and not allowed & DIAL_UNSAFE:
            return []
    elif upper in NUMERIC_FUNCTIONS:
        return []
    elif upper == "CUT":
        return _variable(first, exp.full, scope) + find_taint(args, scope)
    elif _is_source(upper, first.lower()):
        return [Taint(exp.full)]
    return find_taint(args, scope)


def _is_source(function: str, item: str) -> bool:
    if function in ("CALLERID", "CONNECTEDLINE", "REDIRECTING"):
        return item not in _ENUM_ITEMS
    if function == "CHANNEL":
        return item not in CHANNEL_SAFE_ITEMS
    if function == "CDR":
        return item in _CDR_SOURCES
    return function in SOURCE_FUNCTIONS


def _assignments(call: Call) -> list[tuple[str, str]]:
    if call.name == "set":
        pairs = [call.data]
    elif call.name == "mset":
        pairs = list(call.args)
    else:
        return []
    found = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lstrip("_")
        if sep and name and "(" not in name and not is_dynamic(name):
            found.append((name.upper(), value))
    return found


def tainted_variables(steps: Iterable[Step]) -> dict[str, Taint]:
    """Variables a context assigns from caller-controlled data (to a fixed point)."""
    steps = list(steps)
    tainted: dict[str, Taint] = {}
    changed = True
    while changed:
        changed = False
        for step in steps:
            scope = Scope(pattern_is_safe(step.pattern), tainted)
            for call in calls(step):
                for name, value in _assignments(call):
                    found = find_taint(value, scope)
                    if found and name not in tainted:
                        # Remember the source and where the assignment is written.
                        tainted[name] = Taint(found[0].expr, f"{step.file}:{step.line}")
                        changed = True
    return tainted


def sink_taint(step: Step, variables: Mapping[str, Taint]) -> list[tuple[Call, int, Taint]]:
    """(call, argument index, taint) for each caller value reaching a dial string."""
    scope = Scope(pattern_is_safe(step.pattern), variables)
    found = []
    for call in calls(step):
        for index in DIAL_SINKS.get(call.name, ()):
            for taint in find_taint(call.arg(index), scope):
                found.append((call, index, taint))
    return found
