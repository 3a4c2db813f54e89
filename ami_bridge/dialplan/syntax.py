"""Text-level helpers for dialplan values: comments, argument splitting, `${...}`/`$[...]`.

Pure functions on `str`, no knowledge of applications or tenants. `strip_comment` does
what Asterisk's config.c does to one line: `;` starts a comment, `\\;` is a literal `;`
(the backslash is dropped), `;--` ... `--;` is a block comment that may span lines and
nest. `split_top` splits on separators only at the top level: never inside `(...)`,
`[...]`, `${...}` or `$[...]`, never inside a `"..."` string at the top level, never
after a backslash; the pieces joined with their separators give back the input
exactly. `scan_top`, `split_top` and `balanced` share one bracket walker. `expansions`
finds the top-level `${...}` and `$[...]` of a text, so callers can look inside them
recursively. Unbalanced text is never an exception: an
unterminated expansion runs to the end of the text (the parser reports the line).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

# config.c: MAX_NESTED_COMMENTS; deeper nesting is an error there, we only count.
MAX_NESTED_COMMENTS = 128

_CLOSER = {"(": ")", "[": "]", "{": "}"}


def strip_comment(line: str, depth: int) -> tuple[str | None, int]:
    """Strip comments from one line, given the block-comment depth before it.

    Returns the text to process (None when the whole line is inside a block comment)
    and the depth after the line.
    """
    out: list[str] = []
    had_text = depth == 0
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if line.startswith(";--", i) and not line.startswith(";---", i):
            depth = min(depth + 1, MAX_NESTED_COMMENTS)
            i += 3
        elif depth and line.startswith("--;", i):
            depth -= 1
            i += 3
            had_text = had_text or depth == 0
        elif depth:
            i += 1
        elif ch == "\\" and line.startswith(";", i + 1):
            out.append(";")
            i += 2
        elif ch == ";":
            break
        else:
            out.append(ch)
            i += 1
    return ("".join(out) if had_text else None), depth


class _Mark(Enum):
    """What `_walk` reports about one index of the text."""

    TOP = "top"  # a separator character outside every bracket and quote
    STRAY_TOP = "stray at top"  # a closing bracket with nothing open: plain text here
    STRAY = "stray"  # a closing bracket that is not the innermost open one's: ignored
    UNCLOSED = "unclosed"  # at len(text): a bracket or a quote is still open


def _walk(text: str, seps: str) -> Iterator[tuple[int, _Mark]]:
    """The one bracket walker under `scan_top` and `balanced`.

    `(`, `[`, `${` and `$[` open groups closed by their own closer; `"` quotes only at the
    top level; a backslash hides the next character. Opening brackets are structure,
    never separators (so `(` in `seps` is never reported); a stray closer is reported
    and pops nothing, so it cannot end an enclosing group early.
    """
    stack: list[str] = []
    quoted = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quoted:
            quoted = ch != '"'
        elif ch == '"' and not stack:
            quoted = True
        elif ch == "$" and i + 1 < n and text[i + 1] in "{[":
            stack.append(_CLOSER[text[i + 1]])
            i += 2
            continue
        elif ch in "([":
            stack.append(_CLOSER[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
        elif ch in ")]}":
            yield i, (_Mark.STRAY if stack else _Mark.STRAY_TOP)
        elif not stack and ch in seps:
            yield i, _Mark.TOP
        i += 1
    if stack or quoted:
        yield n, _Mark.UNCLOSED


def scan_top(text: str, seps: str) -> Iterator[int]:
    """Yield the indexes of top-level separator characters of `text`."""
    for index, mark in _walk(text, seps):
        if mark is _Mark.TOP or (mark is _Mark.STRAY_TOP and text[index] in seps):
            yield index


def split_top(text: str, seps: str = ",", maxsplit: int = -1) -> list[str]:
    """Split `text` on any character of `seps` at the top level only (see header)."""
    parts: list[str] = []
    start = 0
    for index in scan_top(text, seps):
        if maxsplit >= 0 and len(parts) >= maxsplit:
            break
        parts.append(text[start:index])
        start = index + 1
    parts.append(text[start:])
    return parts


def balanced(text: str) -> bool:
    """True when every `(`, `[`, `${`, `$[` and top-level quote of `text` is closed."""
    return next(_walk(text, ""), None) is None


@dataclass(frozen=True)
class Expansion:
    """One top-level `${...}` or `$[...]` of a text: `text[start:end]` is `full`."""

    start: int
    end: int
    kind: str  # "{" or "["
    inner: str

    @property
    def full(self) -> str:
        return f"${self.kind}{self.inner}{_CLOSER[self.kind]}"


def expansions(text: str) -> list[Expansion]:
    """The top-level `${...}` and `$[...]` of `text`, left to right."""
    found: list[Expansion] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "$" and i + 1 < n and text[i + 1] in "{[":
            end = _matching(text, i + 1)
            found.append(Expansion(i, end, text[i + 1], text[i + 2:end - 1]))
            i = end
            continue
        i += 1
    return found


def _matching(text: str, open_index: int) -> int:
    """Index just past the bracket closing the one at `open_index` (or len(text))."""
    stack = [_CLOSER[text[open_index]]]
    i, n = open_index + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "([{":
            stack.append(_CLOSER[ch])
        elif ch == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
        i += 1
    return n


def is_dynamic(text: str) -> bool:
    """True when `text` holds an expansion, so its value is only known at run time."""
    return bool(expansions(text))


def literal_prefix(text: str) -> str:
    """The literal text before the first expansion (all of it when there is none)."""
    found = expansions(text)
    return text[: found[0].start] if found else text


_FUNC_RE = re.compile(r"([A-Za-z0-9_.~]+)\(")


def split_function(inner: str) -> tuple[str, str, str] | None:
    """`NAME(args)rest` → (NAME, args, rest), for the inside of a `${...}`; else None."""
    match = _FUNC_RE.match(inner)
    if not match:
        return None
    end = _matching(inner, match.end() - 1)
    return match.group(1), inner[match.end():end - 1], inner[end:]


def matching_close(text: str, open_index: int) -> int:
    """Index just past the bracket closing the `(`, `[` or `{` at `open_index`."""
    return _matching(text, open_index)


def options(text: str) -> list[tuple[str, str]]:
    """Application option letters: `tF(ctx^s^1)U(sub)` → [("t",""), ("F","ctx^s^1"), ...]."""
    found: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        letter = text[i]
        if i + 1 < n and text[i + 1] == "(":
            end = _matching(text, i + 1)
            found.append((letter, text[i + 2:end - 1]))
            i = end
        else:
            found.append((letter, ""))
            i += 1
    return found


# What a FILTER() allowed-set may say: ranges a-z, and backslash escapes as in
# func_strings.c (\xNN hex, \n \r \t, anything else stands for itself).
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def filter_charset(spec: str) -> frozenset[str] | None:
    """The characters a `${FILTER(spec,...)}` lets through; None when spec is dynamic."""
    if is_dynamic(spec):
        return None
    chars: list[str] = []
    i, n = 0, len(spec)
    while i < n:
        ch = spec[i]
        if ch == "\\" and i + 1 < n:
            if spec[i + 1] == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", spec[i + 2:i + 4]):
                ch, i = chr(int(spec[i + 2:i + 4], 16)), i + 4
            else:
                ch, i = _ESCAPES.get(spec[i + 1], spec[i + 1]), i + 2
        else:
            i += 1
        if chars and chars[-1] == "-" and len(chars) >= 2 and chars[-2] != "":
            low = chars[-2]
            del chars[-2:]
            chars.extend(chr(c) for c in range(ord(low), ord(ch) + 1))
            chars.append("")  # a range ends here: a following "-" is literal
        else:
            chars.append(ch)
    return frozenset(c for c in chars if c)
