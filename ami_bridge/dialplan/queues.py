"""queues.conf: every tenant's queue holds only that tenant's members and contexts.

`load_queues(paths, source=..., config_dir=...)` reads queues.conf-style files (and
their `#include`s, resolved as `parser` does: against the config directory) into
`QueueLine`s; `check_queues` returns the findings. A queue (a section other than
`[general]`; `(!)` marks a template, other options name templates it inherits) belongs
to the tenant its name says (`ownership`); a queue of no tenant that is not shared is
OWN201, one written in another tenant's file OWN202. In a tenant's queue, each
`member =>` interface and its state interface (fourth field) must be the tenant's own:
`Local/exten@<own context>` or `Tech/<own endpoint>` (Q701); one built from `${...}`
cannot be judged (Q702); the exit `context` and `membergosub` must be the tenant's own
or shared contexts (Q703). Lines inherited from a template are judged in every queue
that inherits them and reported where the template writes them. Pure but for `source`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.allow import Allowance, allowed
from ami_bridge.dialplan.channels import Channel, channel_list
from ami_bridge.dialplan.findings import Finding
from ami_bridge.dialplan.ownership import Ownership
from ami_bridge.dialplan.parser import (
    MAX_INCLUDE_DEPTH,
    DialplanReadError,
    DiskSource,
    Source,
    inherited,
)
from ami_bridge.dialplan.syntax import is_dynamic, split_top, strip_comment

QUEUE_FILE = "queues.conf"
_HEADER_RE = re.compile(r"\[([^\]]+)\]\s*(?:\((.*)\))?\s*$")
_GLOB_MAGIC = re.compile(r"[*?[]")
_CONTEXT_KEYS = frozenset({"context", "membergosub"})


@dataclass(frozen=True)
class QueueLine:
    """A `key = value` (or `key => value`) of section `queue`; key "" for the header."""

    file: Path
    line: int
    queue: str
    key: str
    value: str


@dataclass(frozen=True)
class QueueSection:
    file: Path
    line: int
    name: str
    template: bool
    bases: tuple[str, ...]


@dataclass(frozen=True)
class QueueFiles:
    sections: tuple[QueueSection, ...]
    lines: tuple[QueueLine, ...]
    problems: tuple[Finding, ...]


def load_queues(paths: Sequence[Path], *, source: Source | None = None,
                config_dir: Path | None = None, required: bool = True) -> QueueFiles:
    """Read `paths` and their #includes; a missing path is DialplanReadError if required."""
    reader = _Reader(source or DiskSource(), config_dir)
    for path in paths:
        path = Path(os.path.normpath(path))
        if path not in reader.seen:
            text = reader.source.read(path)
            if text is None and required:
                raise DialplanReadError(path, "no such file")
            if text is not None:
                reader.parse(path, text, None, ())
    return QueueFiles(tuple(reader.sections), tuple(reader.lines), tuple(reader.problems))


class _Reader:
    def __init__(self, source: Source, config_dir: Path | None) -> None:
        self.source, self.config_dir = source, config_dir
        self.sections: list[QueueSection] = []
        self.lines: list[QueueLine] = []
        self.problems: list[Finding] = []
        self.seen: set[Path] = set()

    def parse(self, file: Path, text: str, current: str | None,
              stack: tuple[Path, ...]) -> str | None:
        self.seen.add(file)
        stack = (*stack, file)
        depth = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped, depth = strip_comment(raw, depth)
            line = (stripped or "").strip()
            if not line:
                continue
            if line.startswith("#"):
                current = self.directive(file, number, line, current, stack)
            elif line.startswith("["):
                current = self.header(file, number, line) or current
            elif current is None:
                self.problems.append(Finding(file, number, codes.OUTSIDE_CONTEXT,
                                             f"'{line}' comes before any [queue] header"))
            else:
                key, sep, value = line.partition("=")
                if not sep:
                    self.problems.append(Finding(file, number, codes.MALFORMED,
                                                 f"'{line}' is not 'key = value'"))
                    continue
                self.lines.append(QueueLine(file, number, current, key.strip().lower(),
                                            value.removeprefix(">").strip()))
        return current

    def header(self, file: Path, number: int, line: str) -> str | None:
        match = _HEADER_RE.match(line)
        if not match:
            self.problems.append(Finding(file, number, codes.MALFORMED,
                                         f"bad section header '{line}'"))
            return None
        options = [o.strip() for o in (match.group(2) or "").split(",") if o.strip()]
        name = match.group(1).strip()
        self.sections.append(QueueSection(file, number, name, "!" in options,
                                          tuple(o for o in options if o not in "!+")))
        return name

    def directive(self, file: Path, number: int, line: str, current: str | None,
                  stack: tuple[Path, ...]) -> str | None:
        word, _, rest = line[1:].partition(" ")
        word, target = word.strip().lower(), rest.strip().strip('"<>').strip()
        if word == "exec":
            self.problems.append(Finding(file, number, codes.UNCHECKABLE,
                                         f"'#exec {target}' output cannot be checked"))
            return current
        if word not in ("include", "tryinclude") or not target:
            self.problems.append(Finding(file, number, codes.MALFORMED,
                                         f"unknown directive '{line}'"))
            return current
        base = self.config_dir if self.config_dir is not None else stack[0].parent
        pattern = Path(os.path.normpath(target if os.path.isabs(target) else base / target))
        matches = self.source.glob(pattern) if _GLOB_MAGIC.search(target) else [pattern]
        for path in matches:
            if path in stack or len(stack) >= MAX_INCLUDE_DEPTH:
                self.problems.append(Finding(file, number, codes.INCLUDE_CYCLE,
                                             f"#include cycle or nesting too deep at {path}"))
                continue
            text = self.source.read(path)
            if text is None:
                if word == "include":
                    self.problems.append(Finding(file, number, codes.MISSING_INCLUDE,
                                                 f"#include '{path}' does not exist"))
                continue
            current = self.parse(path, text, current, stack)
        return current


def check_queues(files: QueueFiles, ownership: Ownership,
                 allow: Iterable[Allowance] = ()) -> list[Finding]:
    allow = tuple(allow)
    found = list(files.problems)
    headers = [s for s in files.sections if s.name.lower() != "general"]
    templates = {s.name.lower() for s in headers if s.template}
    by_queue: dict[str, list[QueueLine]] = {}
    for entry in files.lines:
        by_queue.setdefault(entry.queue.lower(), []).append(entry)
    for name in dict.fromkeys(s.name for s in headers if not s.template):
        fragments = [s for s in headers if s.name == name]
        owner = ownership.owner(name)
        first = fragments[0]
        if owner is None:
            if not ownership.is_shared(name):
                found.append(Finding(first.file, first.line, codes.NO_OWNER,
                                     f"queue [{name}] belongs to no tenant: its name "
                                     f"starts with none of {ownership.tenant_list()} "
                                     "and it is not declared shared"))
            continue
        for fragment in fragments:
            tenant = ownership.file_owner(fragment.file)
            if tenant is not None and tenant != owner:
                found.append(Finding(fragment.file, fragment.line, codes.FOREIGN_FILE,
                                     f"queue [{name}] of tenant {owner} is written in "
                                     f"tenant {tenant}'s file {fragment.file}"))
        lines = inherited(fragments, headers, by_queue, templates) \
            + by_queue.get(name.lower(), [])
        for entry in lines:
            for code, subject, why in _judge(entry, owner, ownership):
                if not allowed(allow, owner, code, subject):
                    where = "" if entry.queue.lower() == name.lower() else \
                        f" (inherited by [{name}] from template [{entry.queue}])"
                    found.append(Finding(entry.file, entry.line, code,
                                         f"'{entry.key} => {entry.value}' of tenant "
                                         f"{owner}'s queue [{name}]: {why}{where}"))
    return sorted(set(found))


def _judge(entry: QueueLine, tenant: str,
           ownership: Ownership) -> list[tuple[str, str, str]]:
    if entry.key in _CONTEXT_KEYS:
        context = entry.value.strip()
        if is_dynamic(context):
            return [(codes.QUEUE_CONTEXT, context, f"context '{context}' is chosen at run "
                     "time")]
        if context and ownership.owner(context) != tenant \
                and not ownership.is_shared(context):
            return [(codes.QUEUE_CONTEXT, context,
                     f"a caller or member would run in context [{context}], which is not "
                     f"tenant {tenant}'s")]
        return []
    if entry.key != "member":
        return []
    fields = split_top(entry.value, ",")
    interfaces = [fields[0].strip()] + ([fields[3].strip()] if len(fields) > 3
                                        and fields[3].strip() else [])
    return [j for interface in interfaces for j in _member(interface, tenant, ownership)]


def _member(interface: str, tenant: str,
            ownership: Ownership) -> list[tuple[str, str, str]]:
    if is_dynamic(interface):
        return [(codes.DYNAMIC_MEMBER, interface,
                 f"member '{interface}' is built at run time: the linter cannot prove it "
                 f"is one of tenant {tenant}'s own endpoints or contexts")]
    [channel] = channel_list(interface, many=False) or [interface]
    if not isinstance(channel, Channel):
        return [(codes.CROSS_MEMBER, interface, f"'{interface}' is no Tech/resource "
                 "interface")]
    if channel.is_local:
        context = channel.endpoint or "default"
        if ownership.owner(context) == tenant or ownership.is_shared(context):
            return []
        owner = ownership.owner(context)
        whose = f"tenant {owner}'s" if owner else "no tenant's"
        return [(codes.CROSS_MEMBER, interface,
                 f"member '{interface}' runs in context [{context}], {whose}: the "
                 "queue's callers would reach another tenant's dialplan")]
    owner = ownership.owner(channel.endpoint)
    if owner == tenant:
        return []
    whose = f"tenant {owner}'s" if owner else "no tenant's"
    return [(codes.CROSS_MEMBER, f"{channel.tech}/{channel.endpoint}",
             f"member '{interface}' is endpoint '{channel.endpoint}', {whose}: the "
             "queue's callers would ring another tenant's phones")]


def is_queue_file(path: Path) -> bool:
    return path.name == QUEUE_FILE
