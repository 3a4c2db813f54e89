"""The AsyncAGI driver without sockets: AsyncAGIStart's URL-encoded environment (read by
the one AGI environment parser, hostile values included), the AGI commands it answers
with (built by ami_bridge.agi.wire only, BREAK last, nothing after it), treatments read
back from AsyncAGIExec, abandons, and the resync after a reconnect."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

from ami_bridge import config as config_mod
from ami_bridge.agi import wire
from ami_bridge.ami.protocol import Event
from ami_bridge.calls import Disposition, Responder, Treatment
from ami_bridge.drivers import asyncagi
from ami_bridge.drivers.asyncagi import AsyncAgiDriver, environment
from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants.messages import Target
from tests.unit.test_intermediary import RAW, FakeClock

VENUE = "acme-venue"
CHANNEL = "PJSIP/acme-trunk-00000001"
# The Env of a call recorded on the sandbox Asterisk 22.10 (Local channel), as sent.
RECORDED_ENV = (
    "agi_request%3A%20async%0Aagi_channel%3A%20Local%2Fs%40exp-async-00000002%3B2%0A"
    "agi_language%3A%20en%0Aagi_type%3A%20Local%0Aagi_uniqueid%3A%201795965039.5%0A"
    "agi_version%3A%2022.10.1%2Bdfsg%2B~cs6.17.60671434-1%0Aagi_callerid%3A%20unknown%0A"
    "agi_calleridname%3A%20unknown%0Aagi_callingpres%3A%2067%0Aagi_callingani2%3A%200%0A"
    "agi_callington%3A%200%0Aagi_callingtns%3A%200%0Aagi_dnid%3A%20unknown%0A"
    "agi_rdnis%3A%20unknown%0Aagi_context%3A%20exp-async%0Aagi_extension%3A%20s%0A"
    "agi_priority%3A%203%0Aagi_enhanced%3A%200.0%0Aagi_accountcode%3A%20%0A"
    "agi_threadid%3A%20140644171007680%0Aagi_arg_1%3A%20a%2Cx%0Aagi_arg_2%3A%20bq%0A%0A")


def env_header(context: str = VENUE, name: str = "Alice", number: str = "+4930123",
               extra: str = "") -> str:
    """An Env header as Asterisk writes it: `agi_key: value` lines, a blank line, each
    byte outside the unreserved set percent-encoded."""
    lines = [("agi_request", "async"), ("agi_channel", CHANNEL), ("agi_uniqueid", "1.1"),
             ("agi_callerid", number), ("agi_calleridname", name), ("agi_dnid", "100"),
             ("agi_context", context), ("agi_extension", "100"), ("agi_priority", "7"),
             ("agi_arg_1", ""), ("agi_arg_2", "")]
    text = "".join(f"{k}: {v}\n" for k, v in lines) + extra + "\n"
    return quote(text.encode("utf-8", "surrogateescape"), safe="")


def event(name: str, **fields: str) -> Event:
    return Event(name=name, fields=(("Event", name), *fields.items()))


def start(channel: str = CHANNEL, context: str = VENUE, env: str | None = None) -> Event:
    return event("AsyncAGIStart", Channel=channel, Context=context, Uniqueid="1.1",
                 Env=env if env is not None else env_header(context))


class Core:
    """A route core that keeps every request and lets the test answer it."""

    def __init__(self) -> None:
        self.requests: list[tuple[Mapping[str, str], Responder]] = []
        self.abandoned: list[str] = []

    def route_request(self, env: Mapping[str, str], responder: Responder) -> str | None:
        self.requests.append((env, responder))
        return f"h{len(self.requests)}"

    def abandon(self, handle: str) -> None:
        self.abandoned.append(handle)


class Ami:
    """The AMI side: records (channel, command, id); `up` False = no session."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.up = True

    def __call__(self, channel: str, command: str, command_id: str) -> bool:
        if self.up:
            self.sent.append((channel, command, command_id))
        return self.up

    def commands(self, channel: str = CHANNEL) -> list[str]:
        return [c for ch, c, _ in self.sent if ch == channel]


def driver() -> tuple[AsyncAgiDriver, Core, Ami]:
    core, ami = Core(), Ami()
    return AsyncAgiDriver(core, send=ami, venues=[VENUE]), core, ami


def text(command: bytes) -> str:
    return command.decode().removesuffix("\n")


ROUTE = Disposition("route", target=Target("extension", "1001"))
BREAK = text(wire.async_break())


# -- the environment ------------------------------------------------------------------

def test_the_recorded_environment_is_read_by_the_one_parser() -> None:
    env = environment(RECORDED_ENV)
    assert not isinstance(env, str)
    assert env.get("agi_context") == "exp-async" and env.get("agi_uniqueid") == "1795965039.5"
    assert env.get("agi_arg_1") == "a,x"
    assert env.get("agi_channel") == "Local/s@exp-async-00000002;2"
    assert len(env.variables) == 22


@pytest.mark.parametrize("name", ['Bob "the boss" \\ O\'Neil', "Zoë ☎", "a;b,c|d&e=f", ""])
def test_quotes_and_separators_in_a_caller_name_are_plain_data(name: str) -> None:
    env = environment(env_header(name=name))
    assert not isinstance(env, str) and env.get("agi_calleridname") == name


@pytest.mark.parametrize("hostile, why", [
    ("Eve\nagi_context: globex-venue", "repeated"),  # a newline would forge a variable
    ("Eve\nEXEC Dial PJSIP/x", "not `agi_key: value`"),
    ("Eve\rX", "CR inside"),
    ("Eve\x00", "NUL byte"),
    ("E" * 10_000, "longer than 4096"),  # a 10 KB display name
])
def test_hostile_caller_names_refuse_the_whole_environment(hostile: str, why: str) -> None:
    refused = environment(env_header(name=hostile))
    assert isinstance(refused, str) and why in refused


def test_an_oversized_env_is_refused_before_decoding() -> None:
    refused = environment("%41" * (asyncagi.MAX_ENV_CHARS // 3 + 1))
    assert isinstance(refused, str) and "exceeds" in refused


def test_undecodable_bytes_in_the_caller_name_are_replaced_elsewhere_refused() -> None:
    env = environment(env_header(name="\udcff\udcfe"))  # raw 0xff 0xfe after encoding
    assert not isinstance(env, str) and env.get("agi_calleridname") == "\ufffd\ufffd"
    refused = environment(env_header(extra="agi_network_script: \udcff\n"))
    assert isinstance(refused, str) and "not UTF-8" in refused


# -- answering ------------------------------------------------------------------------

def test_a_disposition_is_the_fastagi_mset_then_break_and_nothing_after() -> None:
    drv, core, ami = driver()
    drv.on_event(start())
    [(env, responder)] = core.requests
    assert env["agi_context"] == VENUE and env["agi_calleridname"] == "Alice"
    responder.dispose(ROUTE)
    assert ami.commands() == [
        'EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"', BREAK]
    responder.dispose(ROUTE)  # a second answer (a bug upstream) sends nothing
    responder.treat(Treatment(prompt="acme/hello"), lambda digits: None)
    assert len(ami.sent) == 2
    drv.on_event(event("AsyncAGIEnd", Channel=CHANNEL))
    assert core.abandoned == [] and drv.sessions == {}


def test_a_hostile_environment_gets_the_default_answer_and_no_vts_hears_of_it() -> None:
    drv, core, ami = driver()
    drv.on_event(start(env=env_header(name="Eve\nagi_context: globex-venue")))
    assert core.requests == []
    assert ami.commands() == [
        'EXEC MSet "AB_CAUSE=refused-environment,AB_ACTION=default"', BREAK]


def test_an_env_naming_another_context_than_the_channel_is_refused() -> None:
    drv, core, ami = driver()
    drv.on_event(start(env=env_header(context="globex-venue")))
    assert core.requests == [] and ami.commands()[-1] == BREAK


def test_other_contexts_and_other_events_are_left_alone() -> None:
    drv, core, ami = driver()
    drv.on_event(start(context="someone-elses-ivr", env=env_header("someone-elses-ivr")))
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId="x", Result="200"))
    drv.on_event(event("Hangup", Channel=CHANNEL))
    assert core.requests == [] and ami.sent == [] and drv.sessions == {}


def test_a_treatment_answers_once_and_reads_its_result_by_command_id() -> None:
    drv, core, ami = driver()
    drv.on_event(start())
    _, responder = core.requests[0]
    got: list[str | None] = []
    responder.treat(Treatment(prompt="acme/menu", collect_digits=2, timeout_ms=3000),
                    got.append)
    assert ami.commands() == ["ANSWER", 'GET DATA "acme/menu" 3000 2']
    get_data_id = ami.sent[1][2]
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId=ami.sent[0][2],
                       Result="200%20result%3D0%0A"))
    assert got == []  # ANSWER's result is nobody's
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId=get_data_id,
                       Result="200%20result%3D42%0A"))
    assert got == ["42"]
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId=get_data_id,
                       Result="200%20result%3D43%0A"))  # a repeat: read once
    responder.treat(Treatment(prompt="acme/hold", collect_digits=1, timeout_ms=100),
                    got.append)
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId=ami.sent[-1][2],
                       Result="200%20result%3D-1%0A"))  # the caller hung up meanwhile
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId="nonsense",
                       Result="garbage"))
    assert got == ["42", None] and ami.commands().count("ANSWER") == 1


def test_music_on_hold_is_stopped_before_the_disposition() -> None:
    drv, core, ami = driver()
    drv.on_event(start())
    _, responder = core.requests[0]
    responder.treat(Treatment(moh_class="acme-moh"), lambda d: None)
    responder.dispose(Disposition("default", cause="timeout"))
    assert ami.commands() == ["ANSWER", 'EXEC StartMusicOnHold "acme-moh"',
                              "EXEC StopMusicOnHold",
                              'EXEC MSet "AB_CAUSE=timeout,AB_ACTION=default"', BREAK]


@pytest.mark.parametrize("ending", ["AsyncAGIEnd", "Hangup"])
def test_the_end_of_the_agi_or_the_channel_while_pending_is_an_abandon(ending: str) -> None:
    drv, core, ami = driver()
    drv.on_event(start())
    responder = core.requests[0][1]
    got: list[str | None] = []
    responder.treat(Treatment(prompt="acme/menu", collect_digits=1, timeout_ms=100),
                    got.append)
    drv.on_event(event(ending, Channel=CHANNEL))
    assert core.abandoned == ["h1"] and drv.sessions == {}
    drv.on_event(event("AsyncAGIExec", Channel=CHANNEL, CommandId=ami.sent[-1][2],
                       Result="200%20result%3D1%0A"))
    assert got == []  # the session is gone; its late result goes nowhere
    responder.dispose(ROUTE)  # a late disposition of the dead call sends nothing
    assert BREAK not in ami.commands()


def test_a_command_the_agi_action_cannot_carry_turns_into_the_default() -> None:
    # wire.quote keeps every command the responder builds far below the AGI action's
    # line (MAX_VALUE_CHARS); the driver still refuses one that would be cut.
    drv, _core, ami = driver()
    drv.on_event(start())
    too_long = b"EXEC Playback " + b"x" * asyncagi.MAX_COMMAND_BYTES + b"\n"
    with pytest.raises(wire.UnsafeValueError):
        asyncagi.command_text(too_long)
    drv.sessions[CHANNEL].finish([too_long])
    assert ami.commands() == [text(asyncagi.DEFAULT_ANSWER[0]), BREAK]


# -- AMI down and the resync ---------------------------------------------------------

def channel(name: str, context: str = VENUE, app: str = "AGI",
            data: str = "agi:async,,") -> Event:
    return event("CoreShowChannel", Channel=name, Context=context, Application=app,
                 ApplicationData=data)


def test_a_disposition_decided_while_ami_is_down_is_delivered_by_the_resync() -> None:
    drv, core, ami = driver()
    drv.on_event(start())
    ami.up = False
    core.requests[0][1].dispose(ROUTE)
    assert ami.sent == []
    ami.up = True
    drv.resync([channel(CHANNEL)])
    assert ami.commands() == [
        'EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"', BREAK]
    drv.resync([channel(CHANNEL)])  # a second reconnect: nothing is sent twice
    assert len(ami.sent) == 2


def test_the_resync_breaks_orphans_in_our_venues_only_and_drops_what_left() -> None:
    drv, core, ami = driver()
    drv.on_event(start())  # pending, and still waiting: the intermediary keeps it
    drv.on_event(start(channel="PJSIP/gone-1"))  # pending, but left AGI while AMI was down
    drv.resync([
        channel(CHANNEL),
        channel("PJSIP/orphan-1"),  # entered AGI while AMI was down: nobody asked
        channel("PJSIP/ivr-1", context="someone-elses-ivr"),
        channel("PJSIP/other-1", app="Dial", data="PJSIP/acme-agent"),
        channel("PJSIP/fast-1", data="agi://127.0.0.1/route"),
    ])
    assert ami.sent and {ch for ch, _, _ in ami.sent} == {"PJSIP/orphan-1"}
    assert ami.commands("PJSIP/orphan-1") == [BREAK] and drv.broken == 1
    assert core.abandoned == ["h2"]
    # The orphan's own AsyncAGIStart, held while the resync ran, is the same AGI run:
    drv.on_event(start(channel="PJSIP/orphan-1"))
    assert len(core.requests) == 2 and ami.commands("PJSIP/orphan-1") == [BREAK]
    drv.on_event(event("AsyncAGIEnd", Channel="PJSIP/orphan-1"))
    drv.on_event(start(channel="PJSIP/orphan-1"))  # a new run after its end: routed
    assert len(core.requests) == 3


# -- with the real intermediary ------------------------------------------------------

def test_with_the_intermediary_and_no_vts_a_hostile_name_gets_a_safe_default() -> None:
    cfg = config_mod.parse(copy.deepcopy(RAW), path=Path("test.toml"))
    core = Intermediary(config=cfg, clock=FakeClock())
    ami = Ami()
    drv = AsyncAgiDriver(core, send=ami, venues=[VENUE])
    name = 'Mallory" ,AB_ACTION=route|' + "x" * 2000
    drv.on_event(start(env=env_header(name=name)))
    assert ami.commands() == ['EXEC MSet "AB_CAUSE=no-vts,AB_ACTION=default"', BREAK]
    assert core.counters.requests == 1


def test_an_asyncagi_venue_without_an_ami_section_is_refused_with_its_key() -> None:
    raw = copy.deepcopy(RAW)
    raw["tenants"]["acme"]["venues"]["acme-venue"]["driver"] = "asyncagi"
    with pytest.raises(config_mod.ConfigError,
                       match=r"tenants\.acme\.venues\.acme-venue\.driver.*\[ami\]"):
        config_mod.parse(raw, path=Path("test.toml"))
    raw["ami"] = {"host": "127.0.0.1", "port": 5038, "username": "u", "secret": "s"}
    assert config_mod.parse(raw, path=Path("test.toml")).venues[VENUE].driver == "asyncagi"
