"""Which contexts (and queues) a dialplan step can send a call into.

`calls(step)` lists the application calls a step makes: its own, plus the ones it
wraps (`ExecIf`, `ExecIfTime`, `Exec`, `TryExec`, `Originate(...,app,...)`).
`targets(call)` lists every context or queue the call may reach, as written (literal
or with `${...}` in it): Goto, GotoIf (both branches), GotoIfTime, Gosub, GosubIf,
Macro (`macro-<name>`), ChannelRedirect, Originate to an extension, Dial options
F/G/U/b/B and M (`macro-<name>`), the pre-dial options b/B of FollowMe and Originate,
hangup handlers (`Set(CHANNEL(hangup_handler_push)=...)`, `hangup_handler_wipe`, also
in MSet), Queue (its name, option F, its gosub argument) and the queue named by
AddQueueMember/RemoveQueueMember, BackGround's and DISA's context, Directory's dial
context, Pickup's `ext@context`, and any `Local/exten@ctx` channel in any argument (a
Local channel without `@` is in context `default`). A handler location without a
context is resolved against the current context when it is pushed, so it stays.
Asterisk substitutes variables before it splits `[[context,]exten,]priority`, so a
value with a comma can add a context field at run time: a target with fewer than three
fields and a run-time value in it is reported as a *possible* context (its first
field). Only the context position matters here; `lint` decides who owns it.
`include`/`switch =>` statements are handled by `lint` directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ami_bridge.dialplan.parser import Step
from ami_bridge.dialplan.syntax import (
    expansions,
    filter_charset,
    options,
    scan_top,
    split_function,
    split_top,
)

# Applications whose arguments are only shown, never acted on: no Local/ check there.
INERT_APPS = frozenset({"noop", "verbose", "log", "dumpchan", "userevent"})
_WRAPPERS = frozenset({"execif", "execiftime", "exec", "tryexec"})
# Not inside a word or a path: "/usr/local/bin" names no Local channel.
_LOCAL_RE = re.compile(r"(?<![A-Za-z0-9_/.-])local/", re.IGNORECASE)
_LOCAL_END = "&,)'^| \t"


@dataclass(frozen=True)
class Call:
    """One application call: `app` as written, its data and top-level arguments."""

    app: str
    data: str
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.app.lower()

    @property
    def text(self) -> str:
        return f"{self.app}({self.data})"

    def arg(self, index: int) -> str:
        return self.args[index] if index < len(self.args) else ""


@dataclass(frozen=True)
class Target:
    """A context (or queue) a call may reach. `context` is the text as written."""

    context: str
    what: str  # e.g. "GotoIf false branch", "Local channel"
    quote: str  # the offending text, for the message
    kind: str = "jump"  # "jump", "local" or "queue"
    possible: bool = False  # a context only if a run-time value holds a comma


def call_of(text: str) -> Call:
    """`App(a,b)` → Call("App", "a,b", ("a", "b")), pbx_config's way."""
    text = text.strip()
    open_index, close_index = text.find("("), text.rfind(")")
    if open_index < 0:
        return Call(text, "", ())
    end = close_index if close_index > open_index else len(text)
    data = text[open_index + 1:end]
    return Call(text[:open_index].strip(), data, tuple(a.strip() for a in split_top(data)))


def calls(step: Step) -> list[Call]:
    """The step's call and the calls it wraps (recursively)."""
    if step.is_hint or not step.app:
        return []
    found: list[Call] = []
    pending = [Call(step.app, step.data, step.args)]
    while pending:
        call = pending.pop(0)
        found.append(call)
        if call.name in ("execif", "execiftime"):
            branches = split_top(call.data, "?", 1)[1:]
            pending += [call_of(b) for b in split_top(branches[0], ":")] if branches else []
        elif call.name in _WRAPPERS:
            pending.append(call_of(call.data))
        elif call.name == "originate" and call.arg(1).lower() == "app" and call.arg(2):
            data = _unquote(call.arg(3))  # Originate(...,app,Goto,"ctx,s,1")
            pending.append(Call(call.arg(2), data, tuple(a.strip() for a in split_top(data))))
    return [c for c in found if c.app]


def _unquote(text: str) -> str:
    """Standard application arguments drop the double quotes around a value."""
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def comma_safe(text: str) -> bool:
    """True when no run-time value in `text` can hold a comma (FILTERed without one)."""
    for exp in expansions(text):
        func = split_function(exp.inner) if exp.kind == "{" else None
        if not func or func[0].upper() != "FILTER":
            return False
        allowed = filter_charset(split_top(func[1], ",", 1)[0])
        if allowed is None or "," in allowed:
            return False
    return True


def label_target(fields: list[str], what: str, quote: str) -> list[Target]:
    """`[[context,]exten,]priority` (already split) → its context, if it names one."""
    fields = [f.strip() for f in fields]
    if len(fields) >= 3:
        return [Target(fields[0], what, quote)]
    if fields and fields[0] and not all(comma_safe(f) for f in fields):
        return [Target(fields[0], what, quote, possible=True)]
    return []


def _branches(data: str, what: str) -> list[Target]:
    """`cond?iftrue:iffalse` of GotoIf/GotoIfTime/GosubIf → the targets of both."""
    parts = split_top(data, "?", 1)
    if len(parts) < 2:
        return []
    found: list[Target] = []
    for side, branch in zip(("true", "false"), split_top(parts[1], ":", 1), strict=False):
        if branch.strip():
            found += label_target(_strip_sub_args(split_top(branch)),
                                  f"{what} {side} branch", branch.strip())
    return found


def _strip_sub_args(fields: list[str]) -> list[str]:
    """Gosub's `priority(arg1,...)`: the arguments are values, not part of the label."""
    if fields:
        last = fields[-1]
        open_index = next(scan_top(last, "("), -1) if "(" in last else -1
        fields = [*fields[:-1], last[:open_index] if open_index >= 0 else last]
    return fields


def _caret_label(arg: str, what: str, quote: str) -> list[Target]:
    return label_target(_strip_sub_args(split_top(arg, "^")), what, quote)


def _dial_options(call: Call, index: int) -> list[Target]:
    found: list[Target] = []
    for letter, arg in options(call.arg(index)):
        quote = f"{letter}({arg})"
        if letter in "FGbB" and arg:
            found += _caret_label(arg, f"{call.app} option {letter}", quote)
        elif letter == "U" and arg and call.name == "dial":
            found.append(Target(split_top(arg, "^")[0].strip(), "Dial option U", quote))
        elif letter == "M" and arg and call.name == "dial":
            found.append(Target("macro-" + split_top(arg, "^")[0].strip(),
                                "Dial option M (macro on answer)", quote))
    return found


_HANDLER_ITEMS = frozenset({"hangup_handler_push", "hangup_handler_wipe"})


def _handler_targets(call: Call) -> list[Target]:
    """`Set(CHANNEL(hangup_handler_push)=[[context,]exten,]priority[(args)])`."""
    pairs = [call.data] if call.name == "set" else list(call.args) \
        if call.name == "mset" else []
    found: list[Target] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        func = split_function(name.strip()) if sep else None
        if func is None or func[0].upper() != "CHANNEL" \
                or func[1].strip().lower() not in _HANDLER_ITEMS:
            continue
        found += label_target(_strip_sub_args(split_top(value.strip())),
                              f"hangup handler ({func[1].strip()})", pair.strip())
    return found


def _jump_targets(call: Call) -> list[Target]:
    name, quote = call.name, call.text
    if name == "goto":
        return label_target(list(call.args), "Goto", quote)
    if name in ("gotoif", "gotoiftime", "gosubif"):
        return _branches(call.data, call.app)
    if name == "gosub":
        return label_target(_strip_sub_args(list(call.args)), "Gosub", quote)
    if name in ("macro", "macroexclusive") and call.arg(0):
        return [Target("macro-" + call.arg(0), call.app, quote)]
    if name == "channelredirect":
        return label_target(list(call.args[1:]), "ChannelRedirect", quote)
    if name == "originate":
        found = _dial_options(call, 6)
        if call.arg(1).lower() != "app" and call.arg(2):
            found.append(Target(call.arg(2), "Originate to an extension", quote))
        return found
    if name == "dial":
        return _dial_options(call, 2)
    if name == "followme":
        return _dial_options(call, 1)
    if name in ("set", "mset"):
        return _handler_targets(call)
    if name == "queue":
        found = _dial_options(call, 1)
        if call.arg(6):
            found.append(Target(call.arg(6), "Queue gosub", quote))
        return found
    if name == "background" and call.arg(3):
        return [Target(call.arg(3), "BackGround digits context", quote)]
    if name in ("disa", "directory") and call.arg(1):
        return [Target(call.arg(1), f"{call.app} context", quote)]
    if name == "pickup":
        return [Target(item.split("@", 1)[1], "Pickup", item)
                for item in split_top(call.arg(0), "&")
                if "@" in item and item.split("@", 1)[1].upper() != "PICKUPMARK"]
    return []


def local_targets(text: str) -> list[Target]:
    """Every `Local/exten@context[/options]` channel in `text`."""
    found: list[Target] = []
    for match in _LOCAL_RE.finditer(text):
        rest = text[match.end():]
        end = next(scan_top(rest, _LOCAL_END), len(rest))
        resource = rest[:end]
        exten_context = split_top(resource, "@", 1)
        context = split_top(exten_context[1], "/", 1)[0] if len(exten_context) > 1 \
            else "default"
        found.append(Target(context.strip(), "Local channel",
                            text[match.start():match.end() + end], kind="local"))
    return found


def targets(call: Call) -> list[Target]:
    """Every context or queue `call` may reach (see the module header)."""
    found = _jump_targets(call)
    if call.name in ("queue", "addqueuemember", "removequeuemember") and call.arg(0):
        found.append(Target(call.arg(0), call.app, call.text, kind="queue"))
    if call.name not in INERT_APPS:
        for arg in call.args:
            found += local_targets(arg)
    return found
