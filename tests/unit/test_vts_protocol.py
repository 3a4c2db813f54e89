"""The bridge <-> VTS protocol: framing, the typed messages, the protocol document."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.tenants import messages as m
from ami_bridge.tenants.messages import MessageError, Target
from ami_bridge.tenants.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    RemoteProtocolError,
    decode_frame,
    encode,
)
from tests.unit.strategies import JSON, dispositions

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"type": "hello", "v": 2, "vts": "acme"},
    {"type": "route_request", "handle": "ab", "call": {"ani_name": "Line\nTwo \u00fc\u20ac"}},
    {"type": "disposition", "handle": "ab", "action": "route", "target": "queue:sales"},
]
STREAM = b"".join(encode(m) for m in MESSAGES)


def decode_all(chunks: list[bytes]) -> list[dict[str, object]]:
    decoder = FrameDecoder()
    out = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while (m := decoder.next_message()) is not None:
            out.append(m)
    return out


def test_frames_are_one_line_each() -> None:
    assert STREAM.count(b"\n") == len(MESSAGES)


@pytest.mark.parametrize("size", [1, 2, 5, 13, len(STREAM)])
def test_any_chunking(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode_all(chunks) == MESSAGES


def test_eof_inside_frame() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b'{"type":"hel')
    assert decoder.next_message() is None
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="EOF inside a frame"):
        decoder.next_message()


def test_frame_size_is_bounded() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(b"x" * 101)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        decoder.next_message()


@pytest.mark.parametrize("raw", [b"not json\n", b"[1,2]\n", b'{"no_type":1}\n', b"\xff\xfe\n"])
def test_bad_frames_are_named(raw: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(raw)
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


# -- typed messages ---------------------------------------------------------------------

CALL = m.CallerData(ani="+4930555", ani_name='A "B"\nC', dnis="100", dnid="100",
                    language="en", uniqueid="17.1",
                    previous=m.Previous(Target("queue", "sales"), "NOANSWER"))
EXAMPLES: list[m.Message] = [
    m.Hello(v=PROTOCOL_VERSION, vts="acme"),
    m.Hello(v=PROTOCOL_VERSION, vts="acme", tenants={"acme": m.TenantRouting(
        timezone="Europe/Berlin", holidays=("2026-12-25",), targets=("1001", "operator"),
        extensions={"1001": "PJSIP/alice"}, rules=({"name": "r", "targets": ["1001"]},))}),
    m.RouteRequest(handle="ab", tenant="acme", venue="acme-venue", timeout_ms=2000, call=CALL),
    m.RouteRequest(handle="ab", tenant="acme", venue="acme-venue", timeout_ms=2000,
                   call=m.CallerData(ani="1")),
    m.TreatmentDone("ab", ok=True, digits="12"), m.Abandoned("ab"),
    m.DefaultRouted("ab", reason="timeout"),
    m.CallProgress(kind="dial_end", venue="acme-venue", uniqueid="1.1", leg="1.2",
                   channel="PJSIP/alice-1", detail={"status": "BUSY"}),
    m.AgentState(tenant="acme", device="PJSIP/alice", available=True, state="NOT_INUSE",
                 paused=False, idle_since=1700000000.5),
    m.Error(handle=None, code="not-yours", message="handle was not given to this VTS"),
    m.RouteTo("ab", Target("external", "+4930123"), dial_timeout=15),
    m.RouteTo("ab", Target.extension("1001")),
    m.Treat("ab", prompt="acme/welcome", collect_digits=4, timeout_ms=3000),
    m.Treat("ab", prompt="welcome"), m.Treat("ab", moh=True),
    m.Reject("ab", cause="congestion"), m.TakeDefault("ab"),
    m.Ask("ab", 15000, m.RouteTo("ab", Target("extension", "1002"), dial_timeout=20),
          group="sales", lookup={"customer": "ACME GmbH"},
          trace=m.TraceInfo(rule="#1 pop", why="ask", inputs={"day": "mon"})),
    m.Ask("ab", 5000, m.TakeDefault("ab")),
    m.Hello(v=PROTOCOL_VERSION, vts="acme", minor=1, events=("agent_state", "call_end")),
    m.Hello(v=PROTOCOL_VERSION, vts="acme", minor=1, events=()),
    m.State("acme", {"round_robin": {"sales": 2, "night": 0}}),
    m.State("acme", {}),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda x: type(x).__name__)
def test_every_message_survives_the_wire(message: m.Message) -> None:
    obj = m.to_wire(message)
    assert obj["type"] == message.TYPE
    assert m.parse(decode_frame(encode(obj)[:-1])) == message


def test_a_hello_without_events_asks_for_everything_and_kinds_are_documented() -> None:
    old = m.parse({"type": "hello", "v": PROTOCOL_VERSION, "vts": "acme"})
    assert isinstance(old, m.Hello) and (old.minor, old.events) == (0, None)
    assert m.to_wire(old) == {"type": "hello", "v": PROTOCOL_VERSION, "vts": "acme"}
    with pytest.raises(m.MessageError, match="events"):
        m.parse({"type": "hello", "v": PROTOCOL_VERSION, "events": "agent_state"})
    section = DOC.split("### Subscriptions")[1].split("##")[0]
    assert all(f"`{kind}`" in section for kind in m.SUBSCRIBABLE)


def test_a_state_is_an_object_of_at_most_the_limit_encoded() -> None:
    # the limit counts the object as a frame encodes it: compact, ASCII (\u escapes)
    room = m.MAX_STATE_BYTES - len('{"k":""}')
    assert m.parse({"type": "state", "tenant": "acme", "state": {"k": "x" * room}})
    with pytest.raises(MessageError, match=f"limit of {m.MAX_STATE_BYTES}") as caught:
        m.parse({"type": "state", "tenant": "acme", "state": {"k": "x" * (room + 1)}})
    assert caught.value.field == "state" and caught.value.type == "state"
    wide = room // 6  # a non-ASCII character is 6 bytes on the wire (\u00fc)
    m.parse({"type": "state", "tenant": "acme", "state": {"k": "\u00fc" * wide}})
    with pytest.raises(MessageError, match="limit"):
        m.parse({"type": "state", "tenant": "acme", "state": {"k": "\u00fc" * (wide + 1)}})
    for bad, field in [({"tenant": "acme", "state": [1]}, "state"),
                       ({"tenant": "acme"}, "state"), ({"state": {}}, "tenant"),
                       ({"tenant": 7, "state": {}}, "tenant")]:
        with pytest.raises(MessageError) as caught:
            m.parse({"type": "state", **bad})
        assert caught.value.field == field


def test_the_trackers_call_event_kinds_are_the_subscribable_ones() -> None:
    from ami_bridge.ami import tracker
    kinds = {kind for kind, _ in tracker._KINDS.values()} | {"answer", "transfer", "call_end"}
    assert kinds == set(m.CALL_EVENT_KINDS)


def test_every_message_type_has_an_example() -> None:
    assert {type(x) for x in EXAMPLES} == set(m.MESSAGES)


def test_one_target_spelling() -> None:
    assert m.to_wire(m.RouteTo("h", Target("queue", "sales")))["target"] == "queue:sales"
    assert m.to_wire(EXAMPLES[2])["call"]["previous"] == {"target": "queue:sales",
                                                          "status": "NOANSWER"}
    assert str(Target.parse("external:+4930123")) == "external:+4930123"
    assert Target.parse("1001", bare="extension") == Target("extension", "1001")
    assert Target.parse("extension:1001", bare="extension") == Target("extension", "1001")


@pytest.mark.parametrize(("text", "why"), [
    ("1001", "not KIND:VALUE"), ("queues:sales", "not one of"), ("internal:1001", "not one of"),
    ("queue:", "not a valid queue"), ("extension:a b", "not a valid extension"),
    ("external:12ab", "not a valid external"), ("extension:1001\n", "not a valid"),
    (["extension:1001"], "must be a string"), (None, "must be a string"),
])
def test_bad_targets_are_named(text: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Target.parse(text)


@pytest.mark.parametrize(("raw", "field"), [
    ([], "(message)"), ({"type": "nope"}, "type"),
    ({"type": "disposition", "action": "route", "target": "queue:sales"}, "handle"),
    ({"type": "disposition", "handle": "h", "action": "route", "target": ["queue:sales"]},
     "target"),
    ({"type": "disposition", "handle": "h", "action": "route", "target": "queue:sales",
      "dial_timeout": 601}, "dial_timeout"),
    ({"type": "disposition", "handle": "h", "action": "warp"}, "action"),
    ({"type": "disposition", "handle": "h", "action": "reject", "cause": "bored"}, "cause"),
    ({"type": "disposition", "handle": "h", "action": "treatment", "prompt": "a&b"}, "prompt"),
    ({"type": "disposition", "handle": "h", "action": "treatment", "prompt": "a",
      "collect_digits": True}, "collect_digits"),
    ({"type": "disposition", "handle": "h", "action": "treatment", "moh": True,
      "collect_digits": 2}, "moh"),
    ({"type": "route_request", "handle": "h", "tenant": "t", "venue": "v", "timeout_ms": 1,
      "call": {"previous": {"target": "internal/1001", "status": "BUSY"}}},
     "call.previous.target"),
    ({"type": "event", "handle": "h", "event": "treatment_done", "ok": "yes"}, "ok"),
    ({"type": "hello", "v": "2"}, "v"),
    ({"type": "hello", "v": 2, "tenants": {"acme": {"rules": "all"}}}, "tenants.acme.rules"),
    ({"type": "agent_state", "tenant": "t", "device": "d", "available": True,
      "idle_since": "never"}, "idle_since"),
])
def test_parse_names_the_bad_field(raw: Any, field: str) -> None:
    with pytest.raises(MessageError) as caught:
        m.parse(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_parse_error_still_says_whose_message_it_was() -> None:
    with pytest.raises(MessageError) as caught:
        m.parse({"type": "disposition", "handle": "h1", "action": "route", "target": 7})
    assert (caught.value.type, caught.value.handle) == ("disposition", "h1")


def test_unknown_keys_are_ignored() -> None:
    raw = {"type": "disposition", "handle": "h", "action": "default", "colour": ["red"]}
    assert m.parse(raw) == m.TakeDefault("h")


EXAMPLES_FOR_PROPERTY = max(300, settings.default.max_examples)


@settings(max_examples=EXAMPLES_FOR_PROPERTY, deadline=None, database=None)
@given(JSON)
def test_parse_of_any_json_is_a_message_or_a_message_error(value: Any) -> None:
    try:
        message = m.parse(value)
    except MessageError:
        return
    assert m.parse(m.to_wire(message)) == message


@settings(max_examples=EXAMPLES_FOR_PROPERTY, deadline=None, database=None)
@given(st.sampled_from([x.TYPE for x in m.MESSAGES]) | JSON, st.data())
def test_parse_of_any_json_in_any_field_is_a_message_or_a_message_error(
        type_: Any, data: st.DataObject) -> None:
    raw = data.draw(dispositions("h"))
    raw["type"] = type_
    raw.update(data.draw(st.dictionaries(st.sampled_from(
        ["call", "tenants", "event", "v", "ok", "detail", "idle_since", "available"]), JSON,
        max_size=3)))
    try:
        message = m.parse(raw)
    except MessageError as exc:
        assert exc.field  # names what was wrong
        return
    json.dumps(m.to_wire(message))  # what parse accepts can be sent again


# -- the protocol document lists every message and field ---------------------------------

DOC = (ROOT / "docs" / "vts-protocol.md").read_text(encoding="utf-8")


def _rows(type_: str) -> list[str]:
    return [line for line in DOC.splitlines() if line.startswith(f"| `{type_}` |")]


NESTED = {m.RouteRequest: m.CallerData, m.Hello: m.TenantRouting}


@pytest.mark.parametrize("message", m.MESSAGES, ids=lambda t: t.__name__)
def test_the_document_lists_every_field_of_every_message(message: type[m.Message]) -> None:
    key, value = (("event", message.EVENT) if hasattr(message, "EVENT") else
                  ("action", message.ACTION) if hasattr(message, "ACTION") else ("", ""))
    rows = [r for r in _rows(message.TYPE) if not key or f"`{key}`: `{value}`" in r]
    assert len(rows) == 1, f"one row for {message.__name__} in docs/vts-protocol.md"
    names = [f.name for f in dataclasses.fields(message)]
    nested = NESTED.get(message)
    names += [f.name for f in dataclasses.fields(nested)] if nested else []
    names += ["target", "status"] if message is m.RouteRequest else []  # previous
    missing = [n for n in names if f"`{n}`" not in rows[0]]
    assert missing == [], f"{message.__name__}: {missing} not in its row"


def test_the_document_lists_every_target_kind_and_the_version() -> None:
    from ami_bridge.namespace import TARGET_KINDS
    for kind in TARGET_KINDS:
        assert f"`{kind}`" in DOC
    assert f"version {PROTOCOL_VERSION}" in DOC.splitlines()[0]
    assert re.search(rf'"v":{PROTOCOL_VERSION}\b', DOC)


# -- layering ------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_namespace_patterns_import_nothing_of_the_project() -> None:
    assert {i for i in _imports(ROOT / "ami_bridge" / "namespace.py")
            if i.startswith("ami_bridge")} == set()


@pytest.mark.parametrize("path", ["tenants/messages.py", "ami_bridge/namespace.py",
                                  "ami_bridge/calls.py", "ami_bridge/intermediary.py",
                                  "ami_bridge/fanout.py"])
def test_message_and_call_modules_do_no_io(path: str) -> None:
    roots = {i.split(".")[0] for i in _imports(ROOT / path)}
    assert not roots & {"asyncio", "socket", "selectors", "subprocess", "threading"}
