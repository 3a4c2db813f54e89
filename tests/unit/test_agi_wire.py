"""The one door to the AGI wire: quoting, refusals, whitelist."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ami_bridge.agi import wire
from ami_bridge.agi.variables import AB_ACTION, AB_TARGET


def parse_agi_args(line: str) -> list[str]:
    """Asterisk's res_agi parse_args, transcribed: quotes group, backslash escapes."""
    args: list[str] = []
    current: list[str] = []
    quoted = escaped = started = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
            started = True
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                args.append("".join(current))
                current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        args.append("".join(current))
    return args


def test_set_variable_quotes_value() -> None:
    assert wire.set_variable(AB_TARGET, '1001 "x" \\y') == (
        b'SET VARIABLE AB_TARGET "1001 \\"x\\" \\\\y"\n'
    )


@pytest.mark.parametrize("bad", ["1001\nEXEC Dial x", "a\rb", "nul\x00", "\n"])
def test_newline_cr_nul_never_reach_the_wire(bad: str) -> None:
    with pytest.raises(wire.UnsafeValueError, match="refused"):
        wire.set_variable(AB_TARGET, bad)


def test_variable_names_come_from_the_whitelist() -> None:
    with pytest.raises(wire.UnsafeValueError, match="whitelist"):
        wire.set_variable("SHELL(rm -rf /)", "x")
    with pytest.raises(wire.UnsafeValueError, match="whitelist"):
        wire.set_variable("CHANNEL(language)", "x")


def test_overlong_value_is_refused() -> None:
    with pytest.raises(wire.UnsafeValueError, match="exceeds"):
        wire.set_variable(AB_ACTION, "x" * (wire.MAX_VALUE_CHARS + 1))


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n\x00",
                                      blacklist_categories=("Cs",)), max_size=200))
def test_any_safe_value_round_trips_as_one_argument(value: str) -> None:
    line = wire.set_variable(AB_TARGET, value)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    args = parse_agi_args(line.decode("utf-8")[:-1])
    assert args == ["SET", "VARIABLE", AB_TARGET, value]


def test_set_variables_is_one_mset_in_order() -> None:
    line = wire.set_variables([(AB_TARGET, "1001"), (AB_ACTION, "route")])
    assert line == b'EXEC MSet "AB_TARGET=1001,AB_ACTION=route"\n'
    assert parse_agi_args(line.decode()[:-1]) == ["EXEC", "MSet",
                                                  "AB_TARGET=1001,AB_ACTION=route"]


@pytest.mark.parametrize("bad", ["a,b", "a|b", 'a"b', "a=b", "a\nb", "a b", "${X}", "x" * 513])
def test_set_variables_refuses_what_mset_would_split_or_strip(bad: str) -> None:
    with pytest.raises(wire.UnsafeValueError):
        wire.set_variables([(AB_TARGET, bad)])


def test_set_variables_names_are_whitelisted() -> None:
    with pytest.raises(wire.UnsafeValueError, match="whitelist"):
        wire.set_variables([("AB_TARGET", "1"), ("SHELL(id)", "x")])


def test_treatment_commands() -> None:
    assert wire.exec_app(wire.APP_PLAYBACK, "acme/welcome") == b'EXEC Playback "acme/welcome"\n'
    assert wire.get_data("hello-world", 3000, 4) == b'GET DATA "hello-world" 3000 4\n'
    assert wire.exec_app(wire.APP_STOP_MOH) == b"EXEC StopMusicOnHold\n"
    for bad in ("../x", "a,b", "a&b", "a b", ""):
        with pytest.raises(wire.UnsafeValueError):
            wire.exec_app(wire.APP_PLAYBACK, bad)
    with pytest.raises(wire.UnsafeValueError, match="whitelist"):
        wire.exec_app("System", "rm -rf /")
