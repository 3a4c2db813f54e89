"""Context-name patterns of the bridge config (`[operator]`, `[shared]`): fnmatch globs.

Contract: a pattern is a context name in which `*` stands for any run of characters
(none included), `?` for one character and `[abc]`, `[a-z]`, `[!abc]` for one character
of (or not of) a set, as Python's `fnmatch` reads them; anything else is literal.
Matching is case-insensitive, as Asterisk finds contexts. `matches(pattern, name)`
says whether a context name matches; `may_start_with(pattern, prefix)` whether some
name the pattern matches starts with `prefix`, so the config can refuse an operator
pattern that reaches into a tenant's `<tenant>-` names before any dialplan is read.
`PATTERN_RE` is what a pattern may hold. Pure, no I/O.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

# CONTEXT_RE's alphabet (ami_bridge.namespace) plus the fnmatch specials `* ? [ ] !`; the
# 80-character bound is CONTEXT_RE's too.
PATTERN_RE = re.compile(r"[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_*?\[\]!-]{0,79}")  # fullmatch
_MAGIC = re.compile(r"[*?\[]")


def is_pattern(text: str) -> bool:
    """Whether `text` holds a glob special (else it names one context)."""
    return _MAGIC.search(text) is not None


def matches(pattern: str, name: str) -> bool:
    """Whether the context `name` matches `pattern` (case-insensitive)."""
    return fnmatchcase(name.lower(), pattern.lower())


def matches_any(patterns: frozenset[str] | tuple[str, ...], name: str) -> bool:
    return any(matches(p, name) for p in patterns)


def _tokens(pattern: str) -> list[str]:
    """`*`, `?`, a whole `[...]` set, or one literal character, as fnmatch splits them
    (an unclosed `[` is a literal `[`)."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # a ']' first in the set is a member
            close = pattern.find("]", j)
            if close != -1:
                tokens.append(pattern[i:close + 1])
                i = close + 1
                continue
        tokens.append(char)
        i += 1
    return tokens


def _accepts(token: str, char: str) -> bool:
    if token in ("*", "?"):
        return True
    if len(token) > 1:
        return fnmatchcase(char, token)  # a set: fnmatch itself judges the character
    return token == char


def may_start_with(pattern: str, prefix: str) -> bool:
    """Whether some name matching `pattern` starts with `prefix` (case-insensitive).

    Runs the pattern as a small automaton over the prefix: the states are positions in
    its token list, `*` may consume a character or be skipped. Any state left alive
    after the prefix can be completed (every token matches some character), so the
    answer is whether one survives."""
    tokens = _tokens(pattern.lower())

    def close(states: set[int]) -> set[int]:
        done = set(states)
        todo = list(states)
        while todo:
            state = todo.pop()
            if state < len(tokens) and tokens[state] == "*" and state + 1 not in done:
                done.add(state + 1)
                todo.append(state + 1)
        return done

    states = close({0})
    for char in prefix.lower():
        step: set[int] = set()
        for state in states:
            if state == len(tokens):
                continue
            token = tokens[state]
            if token == "*":
                step.add(state)
            elif _accepts(token, char):
                step.add(state + 1)
        states = close(step)
        if not states:
            return False
    return True
