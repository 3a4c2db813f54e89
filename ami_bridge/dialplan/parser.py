"""Parse `extensions.conf`-style text into statements that know their file and line.

Follows what Asterisk's config.c and pbx_config accept. A line is `[name](options)` (a
context header: `!` marks a template, `+` adds to a context defined earlier, other
names are templates to inherit), `key => value` or `key = value`, or a `#include`,
`#tryinclude` or `#exec` directive; comments as in `syntax.strip_comment`. `[general]`
and `[globals]` hold settings, not contexts. In a context, `exten`/`same` become a
`Step` (pattern, priority, label, application and its top-level arguments), `include`,
`switch` and `ignorepat` their own statements. `#include "file"` is resolved as
config.c does: an absolute name as is, a relative one against the config directory
(`config_dir`, by default the directory of the top-level file that led to it, where
`extensions.conf` lives), not against the including file's own directory; it may be a
glob (matching nothing is not an error, as in Asterisk; a missing plain file is);
an included file starts in the includer's current context, as in config.c. Include
cycles are cut and reported. Problems come back as `Finding`s beside the statements,
never as exceptions; only an unreadable existing file raises `DialplanReadError`. All
file access goes through a `Source`: `DiskSource` is the one place that touches disk,
`OverlaySource` lets a caller lint rendered text before writing it.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.findings import Finding
from ami_bridge.dialplan.syntax import balanced, split_top, strip_comment

GLOBAL_SECTIONS = frozenset({"general", "globals"})
# Include depth bound: deeper than any sane config, shallow enough to stop a runaway.
MAX_INCLUDE_DEPTH = 32
_GLOB_MAGIC = re.compile(r"[*?[]")
_HEADER_RE = re.compile(r"\[([^\]]*)\]\s*(?:\((.*)\))?\s*$")
_PRIORITY_RE = re.compile(r"([^()]*?)\s*(?:\(([^()]*)\))?\s*$")


class DialplanReadError(Exception):
    """A file that exists could not be read or decoded: an I/O error, not a finding."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Section:
    """A `[name](options)` header: a context, a template, or general/globals."""

    file: Path
    line: int
    name: str
    template: bool = False
    append: bool = False
    bases: tuple[str, ...] = ()

    @property
    def is_global(self) -> bool:
        return self.name.lower() in GLOBAL_SECTIONS


@dataclass(frozen=True)
class Step:
    """One priority of an extension (`exten =>` or `same =>`), in context `context`."""

    file: Path
    line: int
    context: str
    pattern: str
    priority: str
    label: str | None
    app: str  # "" for a hint
    data: str  # the text between the first "(" and the last ")"
    args: tuple[str, ...]  # data split at top-level commas
    text: str  # the value as written, for quoting in messages

    @property
    def is_hint(self) -> bool:
        return self.priority.lower() == "hint"


@dataclass(frozen=True)
class Include:
    file: Path
    line: int
    context: str
    target: str  # the included context (before any timing suffix)
    timing: str


@dataclass(frozen=True)
class Switch:
    file: Path
    line: int
    context: str
    kind: str  # switch, lswitch, eswitch
    value: str


@dataclass(frozen=True)
class IgnorePat:
    file: Path
    line: int
    context: str
    pattern: str


@dataclass(frozen=True)
class Setting:
    """A `key = value` of [general]/[globals] (or any other non-dialplan section)."""

    file: Path
    line: int
    section: str
    key: str
    value: str


Statement = Section | Step | Include | Switch | IgnorePat | Setting


@dataclass(frozen=True)
class Dialplan:
    statements: tuple[Statement, ...]
    problems: tuple[Finding, ...]
    files: tuple[Path, ...]  # every file read, in reading order


class Source(Protocol):
    def read(self, path: Path) -> str | None:
        """The text of `path`, None when it does not exist; DialplanReadError else."""

    def glob(self, pattern: Path) -> list[Path]:
        """Existing paths matching `pattern`, sorted."""


class DiskSource:
    """The filesystem: the only code of this package that reads files."""

    def read(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise DialplanReadError(path, str(exc)) from exc

    def glob(self, pattern: Path) -> list[Path]:
        return sorted(Path(p) for p in glob.glob(str(pattern)))


class OverlaySource:
    """In-memory files laid over another source (rendered text not yet written)."""

    def __init__(self, files: Mapping[Path, str], below: Source | None = None) -> None:
        self._files = {_norm(p): text for p, text in files.items()}
        self._below = below

    def read(self, path: Path) -> str | None:
        if _norm(path) in self._files:
            return self._files[_norm(path)]
        return self._below.read(path) if self._below else None

    def glob(self, pattern: Path) -> list[Path]:
        found = set(self._below.glob(pattern)) if self._below else set()
        found |= {p for p in self._files if fnmatch.fnmatchcase(str(p), str(_norm(pattern)))}
        return sorted(found, key=str)


def _norm(path: Path) -> Path:
    return Path(os.path.normpath(path))


def load(paths: Sequence[Path], *, source: Source | None = None,
         config_dir: Path | None = None) -> Dialplan:
    """Read `paths` (and what they #include) in order into one Dialplan."""
    loader = _Loader(source or DiskSource(), config_dir)
    for path in paths:
        if _norm(path) in loader.seen:
            continue  # listed twice, or already pulled in by an #include
        text = loader.source.read(_norm(path))
        if text is None:
            raise DialplanReadError(path, "no such file")
        loader.parse(_norm(path), text, current=None, stack=())
    return Dialplan(tuple(loader.statements), tuple(loader.problems), tuple(loader.order))


def parse_text(text: str, file: Path) -> Dialplan:
    """Parse one text on its own; #include directives are resolved against nothing."""
    return load([file], source=OverlaySource({file: text}))


class _Loader:
    def __init__(self, source: Source, config_dir: Path | None) -> None:
        self.source = source
        self.config_dir = config_dir
        self.statements: list[Statement] = []
        self.problems: list[Finding] = []
        self.order: list[Path] = []
        self.seen: set[Path] = set()
        self.defined: set[str] = set()
        self.last_exten: dict[str, str] = {}

    def problem(self, file: Path, line: int, code: str, message: str) -> None:
        self.problems.append(Finding(file, line, code, message))

    def parse(self, file: Path, text: str, current: str | None,
              stack: tuple[Path, ...]) -> None:
        self.seen.add(file)
        self.order.append(file)
        stack = (*stack, file)
        depth = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            line, depth = strip_comment(raw, depth)
            line = (line or "").strip()
            if not line:
                continue
            if line.startswith("#"):
                self.directive(file, number, line, current, stack)
            elif line.startswith("["):
                current = self.header(file, number, line) or current
            elif current is None:
                self.problem(file, number, codes.OUTSIDE_CONTEXT,
                             f"'{line}' comes before any [context] header (Asterisk "
                             "refuses the file)")
            else:
                self.entry(file, number, line, current)

    def header(self, file: Path, number: int, line: str) -> str | None:
        match = _HEADER_RE.match(line)
        if not match or not match.group(1).strip():
            self.problem(file, number, codes.MALFORMED, f"bad context header '{line}'")
            return None
        name = match.group(1).strip()
        options = [o.strip() for o in (match.group(2) or "").split(",") if o.strip()]
        section = Section(file, number, name, template="!" in options,
                          append="+" in options,
                          bases=tuple(o for o in options if o not in "!+"))
        if section.append and name not in self.defined:
            self.problem(file, number, codes.MALFORMED,
                         f"'[{name}](+)' adds to a context not defined before it "
                         "(Asterisk refuses the file)")
        self.defined.add(name)
        self.statements.append(section)
        return name

    def entry(self, file: Path, number: int, line: str, current: str) -> None:
        key, sep, value = line.partition("=")
        if not sep:
            self.problem(file, number, codes.MALFORMED,
                         f"'{line}' is neither 'key => value' nor a [context] header")
            return
        key, value = key.strip(), value.removeprefix(">").strip()
        lowered = key.lower()
        if current.lower() in GLOBAL_SECTIONS:
            self.statements.append(Setting(file, number, current, key, value))
        elif lowered in ("exten", "same"):
            self.step(file, number, current, lowered, value)
        elif lowered == "include":
            target, timing = _split_include(value)
            self.statements.append(Include(file, number, current, target, timing))
        elif lowered in ("switch", "lswitch", "eswitch"):
            self.statements.append(Switch(file, number, current, lowered, value))
        elif lowered == "ignorepat":
            self.statements.append(IgnorePat(file, number, current, value))
        else:
            self.problem(file, number, codes.MALFORMED,
                         f"unknown directive '{key}' in [{current}] (pbx_config "
                         "ignores it)")

    def step(self, file: Path, number: int, context: str, keyword: str, value: str) -> None:
        if keyword == "same":
            pattern = self.last_exten.get(context)
            if pattern is None:
                self.problem(file, number, codes.MALFORMED,
                             f"'same => {value}' with no 'exten =>' before it in [{context}]")
                return
            fields = split_top(value, maxsplit=1)
        else:
            fields = split_top(value, maxsplit=2)
            pattern = fields.pop(0).strip() if len(fields) == 3 else ""
            if not pattern:
                self.problem(file, number, codes.MALFORMED,
                             f"'exten => {value}' needs pattern,priority,application")
                return
            self.last_exten[context] = pattern
        if len(fields) != 2:
            self.problem(file, number, codes.MALFORMED,
                         f"'{keyword} => {value}' needs a priority and an application")
            return
        priority_match = _PRIORITY_RE.match(fields[0].strip())
        priority, label = (priority_match.group(1), priority_match.group(2)) \
            if priority_match else (fields[0].strip(), None)
        app, data = _split_app(fields[1].strip())
        if priority.lower() == "hint":
            app, data = "", fields[1].strip()
        elif data is None:
            self.problem(file, number, codes.MALFORMED,
                         f"no closing parenthesis in '{fields[1].strip()}'")
            data = fields[1].strip()[len(app) + 1:]
        elif not balanced(data):
            self.problem(file, number, codes.MALFORMED,
                         f"unbalanced brackets or quotes in '{fields[1].strip()}'")
        args = tuple(a.strip() for a in split_top(data)) if data else ()
        self.statements.append(Step(file, number, context, pattern, priority.strip(), label,
                                    app, data, args, value))

    def directive(self, file: Path, number: int, line: str, current: str | None,
                  stack: tuple[Path, ...]) -> None:
        word, _, rest = line[1:].partition(" ")
        word, target = word.strip().lower(), rest.strip().strip('"<>').strip()
        if word == "exec":
            self.problem(file, number, codes.UNCHECKABLE,
                         f"'#exec {target}' runs a program whose output cannot be checked")
            return
        if word not in ("include", "tryinclude") or not target:
            self.problem(file, number, codes.MALFORMED, f"unknown directive '{line}'")
            return
        # config.c prefixes relative names with the config directory (astetcdir), not
        # with the including file's directory; rendered include files rely on it.
        base = self.config_dir if self.config_dir is not None else stack[0].parent
        pattern = _norm(Path(target) if os.path.isabs(target) else base / target)
        matches = self.source.glob(pattern) if _GLOB_MAGIC.search(target) else [pattern]
        for path in matches:
            self.include(file, number, path, current, stack, word == "include")

    def include(self, file: Path, number: int, path: Path, current: str | None,
                stack: tuple[Path, ...], required: bool) -> None:
        if path in stack:
            chain = " -> ".join(str(p) for p in (*stack[stack.index(path):], path))
            self.problem(file, number, codes.INCLUDE_CYCLE, f"#include cycle: {chain}")
            return
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.problem(file, number, codes.INCLUDE_CYCLE,
                         f"#include nesting deeper than {MAX_INCLUDE_DEPTH} at {path}")
            return
        text = self.source.read(path)
        if text is None:
            if required:
                self.problem(file, number, codes.MISSING_INCLUDE,
                             f"#include '{path}' does not exist (Asterisk refuses the file)")
            return
        self.parse(path, text, current, stack)


def _split_include(value: str) -> tuple[str, str]:
    """`ctx,9:00-17:00,mon-fri,*,*` (or with `|`) → ("ctx", "9:00-17:00,mon-fri,*,*")."""
    parts = re.split(r"[,|]", value, maxsplit=1)
    return parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")


def _split_app(text: str) -> tuple[str, str | None]:
    """pbx_config: the application is before the first "(", its data up to the last ")".

    Returns data None when there is a "(" but no ")"; "" when there are no arguments.
    """
    open_index = text.find("(")
    if open_index < 0:
        return text.strip(), ""
    close_index = text.rfind(")")
    if close_index < open_index:
        return text[:open_index].strip(), None
    return text[:open_index].strip(), text[open_index + 1:close_index]


def contexts(statements: Iterable[Statement]) -> list[Section]:
    """The dialplan contexts among the headers: not templates, not general/globals."""
    return [s for s in statements
            if isinstance(s, Section) and not s.template and not s.is_global]


class _Header(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def bases(self) -> tuple[str, ...]: ...


_Line = TypeVar("_Line")


def inherited(fragments: Sequence[_Header], headers: Sequence[_Header],
              own: Mapping[str, list[_Line]], templates: set[str]) -> list[_Line]:
    """What a section inherits from its templates (`[name](base, ...)`), depth first,
    each template once, whatever is held per section (dialplan statements, queue lines).
    `own`: lower-cased section name -> its lines; `templates`: lower-cased names."""
    seen: set[str] = set()
    result: list[_Line] = []
    pending = [b.lower() for f in fragments for b in f.bases]
    while pending:
        base = pending.pop(0)
        if base in seen or base not in templates:
            continue
        seen.add(base)
        pending += [b.lower() for h in headers if h.name.lower() == base for b in h.bases]
        result += own.get(base, [])
    return result
