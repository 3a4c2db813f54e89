"""The dialplan parser: comments, headers, steps, argument splitting, #include."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.parser import (
    DialplanReadError,
    IgnorePat,
    Include,
    OverlaySource,
    Section,
    Setting,
    Step,
    Switch,
    contexts,
    load,
    parse_text,
)
from ami_bridge.dialplan.syntax import (
    balanced,
    expansions,
    filter_charset,
    literal_prefix,
    split_top,
    strip_comment,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "dialplan"
F = Path("extensions.conf")


def steps(text: str) -> list[Step]:
    return [s for s in parse_text(text, F).statements if isinstance(s, Step)]


def problems(text: str) -> list[tuple[int, str]]:
    return [(p.line, p.code) for p in parse_text(text, F).problems]


# --- comments -------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "expected"), [
    ("exten => 1,1,NoOp(x) ; a comment", "exten => 1,1,NoOp(x) "),
    (r"exten => 1,1,NoOp(a\;b)", "exten => 1,1,NoOp(a;b)"),
    (r"exten => 1,1,NoOp(a\;b) ; c", "exten => 1,1,NoOp(a;b) "),
    ("; only a comment", ""),
    (";--- not a block comment", ""),
    ("a ;-- block --; b", "a  b"),
    ("no comment here", "no comment here"),
])
def test_strip_comment_one_line(line: str, expected: str) -> None:
    assert strip_comment(line, 0) == (expected, 0)


def test_block_comments_span_lines_and_nest() -> None:
    text, depth = strip_comment("a ;-- one ;-- two", 0)
    assert (text, depth) == ("a ", 2)
    assert strip_comment("hidden --; still hidden", depth) == (None, 1)
    assert strip_comment("x --; visible", 1) == (" visible", 0)


def test_block_comment_hides_statements() -> None:
    text = "[acme-a]\n;--\nexten => 1,1,Goto(globex-x,s,1)\n--;\nexten => 2,1,NoOp(ok)\n"
    assert [(s.line, s.pattern) for s in steps(text)] == [(5, "2")]


def test_escaped_semicolon_reaches_the_application() -> None:
    [step] = steps(r"[acme-a]" "\n" r"exten => 1,1,Set(X=a\;b) ; why" "\n")
    assert step.data == "X=a;b"


# --- headers and statements -----------------------------------------------------------

def test_headers_with_template_markers() -> None:
    text = "[tpl](!)\n[acme-a]\n[acme-a](+)\n[acme-b](tpl,other)\n[general]\n[globals]\n"
    dialplan = parse_text(text, F)
    headers = [s for s in dialplan.statements if isinstance(s, Section)]
    assert [(h.name, h.template, h.append, h.bases) for h in headers] == [
        ("tpl", True, False, ()), ("acme-a", False, False, ()), ("acme-a", False, True, ()),
        ("acme-b", False, False, ("tpl", "other")), ("general", False, False, ()),
        ("globals", False, False, ())]
    assert [c.name for c in contexts(dialplan.statements)] == ["acme-a", "acme-a", "acme-b"]
    assert dialplan.problems == ()


def test_append_to_undefined_context_is_refused() -> None:
    assert problems("[acme-a](+)\nexten => 1,1,NoOp()\n") == [(1, codes.MALFORMED)]


def test_exten_and_same_with_labels_and_both_arrows() -> None:
    text = ("[acme-a]\n"
            "exten => _X.,1,NoOp(start)\n"
            " same => n(ask),AGI(${AB_AGI_URL}/route,${AB_LAST},${DIALSTATUS})\n"
            "exten = 1001,hint,PJSIP/acme-1001\n"
            "exten => s,1(top),Hangup\n")
    got = [(s.line, s.pattern, s.priority, s.label, s.app, s.args) for s in steps(text)]
    assert got == [
        (2, "_X.", "1", None, "NoOp", ("start",)),
        (3, "_X.", "n", "ask", "AGI", ("${AB_AGI_URL}/route", "${AB_LAST}", "${DIALSTATUS}")),
        (4, "1001", "hint", None, "", ("PJSIP/acme-1001",)),
        (5, "s", "1", "top", "Hangup", ()),
    ]


def test_arguments_split_respecting_expansions_quotes_and_parentheses() -> None:
    [step] = steps("[acme-a]\nexten => s,1,Dial(PJSIP/${FILTER(0-9,${EXTEN})},"
                   '${IF($["${X}" = "a,b"]?1:2)},"x,y",G(acme-b^s^1))\n')
    assert step.args == ("PJSIP/${FILTER(0-9,${EXTEN})}",
                         '${IF($["${X}" = "a,b"]?1:2)}', '"x,y"', "G(acme-b^s^1)")


def test_pattern_with_bracket_class_holding_a_comma() -> None:
    [step] = steps("[acme-a]\nexten => _[1,2]X,1,NoOp()\n")
    assert step.pattern == "_[1,2]X"


def test_include_switch_ignorepat_and_settings() -> None:
    text = ("[general]\nstatic = yes\n[globals]\nAB=1\n[acme-a]\n"
            "include => acme-b,9:00-17:00,mon-fri,*,*\ninclude => acme-c\n"
            "switch => Loopback/${EXTEN}@acme-d\nignorepat => 9\n")
    got = [s for s in parse_text(text, F).statements if not isinstance(s, Section)]
    assert got == [
        Setting(F, 2, "general", "static", "yes"), Setting(F, 4, "globals", "AB", "1"),
        Include(F, 6, "acme-a", "acme-b", "9:00-17:00,mon-fri,*,*"),
        Include(F, 7, "acme-a", "acme-c", ""),
        Switch(F, 8, "acme-a", "switch", "Loopback/${EXTEN}@acme-d"),
        IgnorePat(F, 9, "acme-a", "9"),
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("exten => 1,1,NoOp()\n", [(1, codes.OUTSIDE_CONTEXT)]),
    ("[acme-a]\nsame => n,NoOp()\n", [(2, codes.MALFORMED)]),
    ("[acme-a]\nexten => 1,1\n", [(2, codes.MALFORMED)]),
    ("[acme-a]\nexten => 1,1,Dial(PJSIP/x\n", [(2, codes.MALFORMED)]),
    ("[acme-a]\nexten => 1,1,Set(X=${FOO)\n", [(2, codes.MALFORMED)]),
    ("[acme-a]\nnonsense\n", [(2, codes.MALFORMED)]),
    ("[acme-a]\nexen => 1,1,NoOp()\n", [(2, codes.MALFORMED)]),
    ("[acme-a\n", [(1, codes.MALFORMED)]),
    ("[acme-a]\n#exec /bin/echo\n", [(2, codes.UNCHECKABLE)]),
])
def test_malformed_lines_are_reported_with_their_line(
        text: str, expected: list[tuple[int, str]]) -> None:
    assert problems(text) == expected


# --- #include -------------------------------------------------------------------------

def test_include_glob_in_order_continuing_the_current_section() -> None:
    dialplan = load([DATA / "includes/glob/extensions.conf"])
    assert [p.name for p in dialplan.files] == ["extensions.conf", "acme.conf", "globex.conf"]
    assert dialplan.problems == ()
    first = dialplan.statements[2]
    assert isinstance(first, Setting) and first.section == "globals"
    assert first.file.name == "acme.conf" and first.line == 1


def test_include_cycle_is_cut_and_reported() -> None:
    dialplan = load([DATA / "includes/cycle/a.conf"])
    [problem] = dialplan.problems
    assert (problem.file.name, problem.line, problem.code) == ("b.conf", 3, codes.INCLUDE_CYCLE)
    assert "a.conf -> " in problem.message and "b.conf -> " in problem.message


def test_missing_include_is_a_finding_tryinclude_is_not() -> None:
    dialplan = load([DATA / "includes/missing/extensions.conf"])
    assert [(p.line, p.code) for p in dialplan.problems] == [(3, codes.MISSING_INCLUDE)]
    assert "nowhere.conf" in dialplan.problems[0].message


def test_relative_include_resolves_against_the_config_dir_like_asterisk() -> None:
    source = OverlaySource({
        Path("etc/extensions.conf"): '#include "sub/top.conf"\n',
        Path("etc/sub/top.conf"): '[acme-a]\n#include "sub/leaf.conf"\n',
        Path("etc/sub/leaf.conf"): "exten => 1,1,NoOp()\n",
    })
    dialplan = load([Path("etc/extensions.conf")], source=source)
    assert dialplan.problems == ()
    assert [s.context for s in dialplan.statements if isinstance(s, Step)] == ["acme-a"]
    alone = load([Path("etc/sub/top.conf")], source=source, config_dir=Path("etc"))
    assert alone.problems == ()


def test_files_listed_twice_are_read_once() -> None:
    path = DATA / "includes/glob/extensions.conf"
    once = load([path])
    assert load([path, path.parent / "tenants/acme.conf"]).statements == once.statements


def test_unreadable_files_raise() -> None:
    with pytest.raises(DialplanReadError, match="no such file"):
        load([DATA / "does-not-exist.conf"])

    class Broken(OverlaySource):
        def read(self, path: Path) -> str | None:
            raise DialplanReadError(path, "invalid utf-8")

    with pytest.raises(DialplanReadError, match="invalid utf-8"):
        load([Path("x.conf")], source=Broken({}))


def test_disk_source_reports_undecodable_bytes(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_bytes(b"[acme-a]\nexten => 1,1,NoOp(\xff)\n")
    with pytest.raises(DialplanReadError):
        load([tmp_path / "bad.conf"])


# --- syntax helpers and properties ----------------------------------------------------

def test_expansions_and_literal_prefix() -> None:
    text = "acme-${AB_KIND}x$[1+${N}]"
    assert [e.full for e in expansions(text)] == ["${AB_KIND}", "$[1+${N}]"]
    assert literal_prefix(text) == "acme-"
    assert literal_prefix("plain") == "plain"


def test_filter_charset() -> None:
    assert filter_charset("0-9+") == frozenset("0123456789+")
    assert filter_charset(r"a-c\x2C") == frozenset("abc,")
    assert filter_charset("${SET}") is None


_WORD = st.text(st.sampled_from("abcXZ09 -+/@&.:|'?"), max_size=6)


@st.composite
def balanced_atoms(draw: st.DrawFn, depth: int = 0) -> str:
    """A text whose separators all sit inside ${...}, $[...], (...) or a quoted string."""
    inner = draw(st.lists(st.one_of(_WORD, st.just(","), st.just("?"), st.just(":")),
                          max_size=4))
    body = "".join(inner)
    if depth < 2 and draw(st.booleans()):
        body += draw(balanced_atoms(depth + 1))
    wrap = draw(st.sampled_from(["${F(%s)}", "$[%s]", "(%s)", "${%s}", "X(%s)"]))
    return wrap % body


@given(st.lists(st.one_of(_WORD, balanced_atoms()).map(lambda s: s.replace('"', "")),
                min_size=1, max_size=5))
def test_split_never_splits_inside_balanced_brackets(pieces: list[str]) -> None:
    pieces = [p for p in pieces if "," not in p or p.startswith(("$", "(", "X("))]
    if not pieces:
        return
    assert split_top(",".join(pieces)) == pieces


@given(st.text(st.sampled_from('ab,${}[]()"\\?:'), max_size=30), st.sampled_from([",", "?:"]))
def test_split_is_lossless(text: str, seps: str) -> None:
    parts = split_top(text, seps)
    rebuilt = parts[0]
    index = len(parts[0])
    for part in parts[1:]:
        assert text[index] in seps
        rebuilt += text[index] + part
        index += 1 + len(part)
    assert rebuilt == text


@given(st.text(max_size=40), st.integers(min_value=0, max_value=3))
def test_strip_comment_never_raises_and_keeps_plain_text(line: str, depth: int) -> None:
    text, after = strip_comment(line, depth)
    assert after >= 0
    if depth == 0 and ";" not in line:
        assert (text, after) == (line, 0)


@given(st.text(st.sampled_from("a,${}[]()\"\\"), max_size=30))
def test_balanced_never_raises(text: str) -> None:
    balanced(text)


@pytest.mark.parametrize(("text", "expected"), [
    ('Dial(PJSIP/a,20,b(x^s^1(${ARG})))', True),
    ("$[${A}+1]", True),
    ('"a,(b"', True),  # a top-level quote hides the "("
    ('NoOp("a,(b")', False),  # inside brackets a quote is plain text: "(" is open
    ("Set(X=a\\)b)", True),  # the backslash hides the ")"
    ("NoOp(a", False),
    ("NoOp(a))", False),  # a closer with nothing open
    ("${A)}", False),  # a closer that is not the innermost group's
    ('"open', False),
    ("${A", False),
])
def test_balanced(text: str, expected: bool) -> None:
    assert balanced(text) is expected


def test_split_top_and_balanced_share_the_walk() -> None:
    # A stray ")" inside ${...} is not the group's closer: the "," after it is still inside.
    assert split_top("${A)B},c") == ["${A)B}", "c"]
    assert not balanced("${A)B}")
    # A stray ")" at the top level is plain text, a separator if asked for.
    assert split_top("a)b,c", ")") == ["a", "b,c"]
    # An unterminated group runs to the end of the text (no exception).
    assert split_top("a,${b,c") == ["a", "${b,c"]
