"""The one door to the AGI wire.

Every AGI command the bridge sends is built here and nowhere else. Values are quoted
for Asterisk's AGI argument parser (backslash and double quote escaped, the whole value
in double quotes) and rejected outright when they hold CR, LF or NUL, so a value can
never end one command and start another. Channel-variable names come from a fixed
whitelist (the dialplan contract, `ami_bridge.agi.variables`); prompt names follow
`ami_bridge.namespace.PROMPT_RE`, and no value that came from a VTS, a caller or a user ever
becomes an application name, a dialplan function or a variable expression: the builders
below take those parts only from module constants.

This module does no I/O; it turns intentions into bytes.
"""

from __future__ import annotations

import re

from ami_bridge.agi.variables import WRITABLE_VARIABLES
from ami_bridge.namespace import MAX_COLLECT_DIGITS, PROMPT_RE

# A single AGI command line is read by Asterisk into a fixed buffer (AGI_BUF_LEN, 2048
# bytes in res_agi.c); longer lines are truncated there, which would silently change
# meaning. We refuse before that happens, with margin for the command word.
MAX_COMMAND_BYTES = 2000
# Individual values we put on the wire are short by nature (targets, causes, digits);
# the bound keeps a hostile VTS from growing a command toward the limit above.
MAX_VALUE_CHARS = 512

_FORBIDDEN = ("\r", "\n", "\x00")


class UnsafeValueError(ValueError):
    """A value, variable name or command was refused before reaching the AGI wire."""


def quote(value: str) -> str:
    """Quote one AGI argument, or raise `UnsafeValueError` saying why it is unsafe."""
    if not isinstance(value, str):
        raise UnsafeValueError(f"AGI value must be a string, got {type(value).__name__}")
    for ch in _FORBIDDEN:
        if ch in value:
            raise UnsafeValueError(f"AGI value {value!r} contains {ch!r}; refused")
    if len(value) > MAX_VALUE_CHARS:
        raise UnsafeValueError(
            f"AGI value of {len(value)} characters exceeds {MAX_VALUE_CHARS}; refused"
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(*parts: str) -> bytes:
    data = (" ".join(parts) + "\n").encode("utf-8")
    if len(data) > MAX_COMMAND_BYTES:
        raise UnsafeValueError(f"AGI command of {len(data)} bytes exceeds {MAX_COMMAND_BYTES}")
    return data


def set_variable(name: str, value: str) -> bytes:
    """`SET VARIABLE name "value"` for a whitelisted channel variable."""
    if name not in WRITABLE_VARIABLES:
        raise UnsafeValueError(f"channel variable {name!r} is not on the whitelist")
    return _line("SET VARIABLE", name, quote(value))


# Values set together in one command (`set_variables`): MSet splits on ',' and '|' and
# strips quotes, so its values keep to an alphabet with none of those, and no '='. '&'
# joins the extensions of a `phones` target and the devices of AB_DIAL (Dial's own
# separator: the bridge writes it only there, from the tenant file's devices).
_MSET_VALUE_RE = re.compile(r"[A-Za-z0-9_+*#:/.@&-]{0,512}")  # fullmatch
APP_MSET = "MSet"


def check_variables(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`pairs` unchanged if every name is whitelisted and every value keeps to the strict
    alphabet above, else `UnsafeValueError`. The door for every driver: FastAGI's and
    AsyncAGI's MSet below, and ARI's one request per variable, which needs no quoting
    but keeps the same values so that the dialplan sees the same contract."""
    for name, value in pairs:
        if name not in WRITABLE_VARIABLES:
            raise UnsafeValueError(f"channel variable {name!r} is not on the whitelist")
        if not isinstance(value, str) or not _MSET_VALUE_RE.fullmatch(value):
            raise UnsafeValueError(f"value {value!r} for {name} is not safe to set with MSet")
    if not pairs:
        raise UnsafeValueError("set_variables needs at least one variable")
    return pairs


def set_variables(pairs: list[tuple[str, str]]) -> bytes:
    """Set several whitelisted channel variables in one round trip, in order:
    `EXEC MSet "A=1,B=2"`. Values outside a strict alphabet are refused."""
    parts = [f"{name}={value}" for name, value in check_variables(pairs)]
    return _line("EXEC", APP_MSET, quote(",".join(parts)))


# -- treatments -----------------------------------------------------------------------
# The only applications the bridge ever EXECs. Never taken from a VTS, caller or user.
APP_PLAYBACK = "Playback"
APP_START_MOH = "StartMusicOnHold"
APP_STOP_MOH = "StopMusicOnHold"
_APPS = frozenset({APP_PLAYBACK, APP_START_MOH, APP_STOP_MOH})


def check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not PROMPT_RE.fullmatch(prompt):
        raise UnsafeValueError(f"prompt {prompt!r} is not a safe sound name "
                               "(letters, digits, _ and - in up to 4 '/'-separated parts)")
    return prompt


def answer() -> bytes:
    return _line("ANSWER")


def async_break() -> bytes:
    """`ASYNCAGI BREAK`: ends an AsyncAGI session (AGI(agi:async)); the dialplan runs on."""
    return _line("ASYNCAGI BREAK")


def exec_app(app: str, argument: str = "") -> bytes:
    """`EXEC app "argument"` for one of the whitelisted applications."""
    if app not in _APPS:
        raise UnsafeValueError(f"application {app!r} is not on the whitelist")
    if app == APP_PLAYBACK:
        check_prompt(argument)
    if argument and ("," in argument or "|" in argument or "&" in argument):
        raise UnsafeValueError(f"argument {argument!r} for {app} holds a separator")
    return _line("EXEC", app, quote(argument)) if argument else _line("EXEC", app)


def get_data(prompt: str, timeout_ms: int, max_digits: int) -> bytes:
    """`GET DATA prompt timeout maxdigits`: play the prompt and collect DTMF digits."""
    check_prompt(prompt)
    if not 1 <= int(max_digits) <= MAX_COLLECT_DIGITS:
        raise UnsafeValueError(f"max_digits {max_digits!r} not in 1..{MAX_COLLECT_DIGITS}")
    if not 1 <= int(timeout_ms) <= 600_000:
        raise UnsafeValueError(f"timeout_ms {timeout_ms!r} not in 1..600000")
    return _line("GET DATA", quote(prompt), str(int(timeout_ms)), str(int(max_digits)))
