"""The shipped VTS runtime and the fault VTS built on its decision hook, fed frames directly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.tenants import messages as m
from ami_bridge.tenants import personal
from ami_bridge.tenants import worker as worker_mod
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.protocol import (
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    FrameDecoder,
    encode,
)
from ami_bridge.tenants.worker import Worker
from harness.fault_vts import FaultVts

RULES = [{"name": "hunt", "targets": ["1001", "queue:sales"], "overflow_after": 15}]
HELLO = m.Hello(v=PROTOCOL_VERSION, vts="acme", tenants={
    "acme": m.TenantRouting(timezone="UTC", targets=("1001",), rules=tuple(RULES))})


class Transport:
    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.decoder.receive_data(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def sent(self) -> list[m.Message]:
        out = []
        while (raw := self.decoder.next_message()) is not None:
            out.append(m.parse(raw))
        return out


@pytest.fixture
def done() -> Iterator[asyncio.Future[None]]:
    loop = asyncio.new_event_loop()
    yield loop.create_future()
    loop.close()


def connect(worker: Worker) -> Transport:
    transport = Transport()
    worker.connection_made(transport)  # type: ignore[arg-type]
    # Protocol 2.1: the shipped runtime asks only for what it reads (agent states); the
    # fault VTS of the tests records everything and asks for every kind (None).
    events = ("agent_state",) if type(worker) is Worker else worker.events
    assert transport.sent() == [m.Hello(v=PROTOCOL_VERSION, vts="acme",
                                        minor=PROTOCOL_MINOR, events=events)]
    worker.data_received(encode(m.to_wire(HELLO)))
    return transport


def request(handle: str, previous: m.Previous | None = None) -> bytes:
    return encode(m.to_wire(m.RouteRequest(handle=handle, tenant="acme", venue="acme-venue",
                                           timeout_ms=2000,
                                           call=m.CallerData(ani="1", previous=previous))))


def untraced(message: m.Message) -> m.Message:
    return dataclasses.replace(message, trace=None) if hasattr(message, "trace") else message


def test_the_runtime_routes_by_the_rules_and_overflows_on_previous(
        done: asyncio.Future[None]) -> None:
    worker = Worker(name="acme", done=done)
    transport = connect(worker)
    worker.data_received(request("h1"))
    worker.data_received(request("h2", m.Previous(Target.extension("1001"), "NOANSWER")))
    worker.data_received(request("h3", m.Previous(Target("queue", "sales"), "BUSY")))
    sent = transport.sent()
    assert [untraced(x) for x in sent] == [
        m.RouteTo("h1", Target.extension("1001"), dial_timeout=15),
        m.RouteTo("h2", Target("queue", "sales"), dial_timeout=15), m.TakeDefault("h3")]
    # each names the tenant rule that decided, for the route trace
    traces = [x.trace for x in sent if isinstance(x, m.RouteTo | m.TakeDefault)]
    assert [t.rule if t else None for t in traces] == ["hunt", "hunt", "(no rule matched)"]
    assert traces[1] is not None and "after extension:1001 gave NOANSWER" in traces[1].why
    # on the wire, the one spelling
    assert m.to_wire(m.RouteTo("h2", Target("queue", "sales")))["target"] == "queue:sales"


def test_a_frame_the_runtime_cannot_read_is_skipped(done: asyncio.Future[None]) -> None:
    worker = Worker(name="acme", done=done)
    transport = connect(worker)
    worker.data_received(b'{"type":"route_request","handle":"h1","call":[]}\n')
    worker.data_received(request("h2"))
    assert [x.handle for x in transport.sent() if isinstance(x, m.RouteTo)] == ["h2"]
    assert not transport.closed


def test_late_answer_refusals_are_summarised_not_logged_one_by_one(
        done: asyncio.Future[None], caplog: pytest.LogCaptureFixture) -> None:
    """A VTS resumed after SIGSTOP answers its backlog; each late answer is refused."""
    now = [100.0]
    worker = Worker(name="acme", done=done, clock=lambda: now[0])
    connect(worker)
    refusal = m.Error(handle="h", code="not-pending",
                      message="call is not pending (default:timeout); not acted on")
    backlog = [m.DefaultRouted(f"h{i}", reason="timeout") for i in range(500)]
    with caplog.at_level("INFO", logger="ami_bridge.tenants.worker"):
        for event in backlog:
            worker.data_received(encode(m.to_wire(event)))
            worker.data_received(encode(m.to_wire(refusal)))
            now[0] += 0.01  # 500 calls in 5 s: a few lines of each kind
        assert [r.levelname for r in caplog.records].count("WARNING") == 5
        assert [r.levelname for r in caplog.records].count("INFO") == 20
        now[0] += 10.0
        worker.data_received(encode(m.to_wire(refusal)))
    assert "(495 similar lines suppressed)" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(("behaviour", "expected"), [
    ("rules", [m.RouteTo("h1", Target.extension("1001"), dial_timeout=15)]),
    ("silent", []),
    ("foreign-target", [m.RouteTo("h1", Target.extension("2001"))]),
])
def test_fault_vts_behaviours(behaviour: str, expected: list[m.Message], tmp_path: Path,
                              done: asyncio.Future[None]) -> None:
    record = (tmp_path / "record.jsonl").open("a", encoding="utf-8")
    vts = FaultVts(name="acme", done=done, behaviour=behaviour, late_by=1.0,
                   foreign_target=Target.extension("2001"), record=record)
    transport = connect(vts)
    vts.data_received(request("h1"))
    record.close()
    assert [untraced(x) for x in transport.sent()] == expected
    recorded: list[dict[str, Any]] = [
        json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert [r["type"] for r in recorded] == ["hello", "route_request"]


# -- personal venues: a user's validated rules are kept between calls --------------------

def personal_hello(ring_time: int) -> bytes:
    return encode(m.to_wire(m.Hello(v=PROTOCOL_VERSION, vts="acme", tenants={
        "acme": m.TenantRouting(timezone="UTC", targets=("1001",), rules=tuple(RULES),
                                extensions={"1001": "PJSIP/a", "1002": "PJSIP/b",
                                            "1003": "PJSIP/c"}, ring_time=ring_time)})))


REAL_PARSE = personal.parse_portion  # before the `parses` fixture counts it


def forward(target: str) -> dict[str, Any]:
    """A stored portion body (normalised, as the store keeps it) forwarding every call."""
    raw = {"rules": [{"name": "fwd", "action": "forward", "target": f"extension:{target}"}]}
    return REAL_PARSE(raw, extensions=None, external_prefixes=(), ring_time=20).to_json()


def call_user(handle: str, user: str, version: int, body: dict[str, Any]) -> bytes:
    return encode(m.to_wire(m.RouteRequest(
        handle=handle, tenant="acme", venue="acme-personal", timeout_ms=2000,
        call=m.CallerData(ani="+4930123", dnis="2001"),
        user=m.UserRouting(user_id=user, number="2001", timezone="", bindings=("1001",),
                           version=version, portion=body))))


def routed(transport: Transport) -> list[tuple[str, int]]:
    return [(x.target.value, x.dial_timeout) for x in transport.sent()
            if isinstance(x, m.RouteTo)]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts parse_portion calls (the work the cache saves)."""
    calls: list[int] = []
    def counting(raw: object, **kwargs: Any) -> personal.RuleSet:
        calls.append(1)
        return REAL_PARSE(raw, **kwargs)

    monkeypatch.setattr(personal, "parse_portion", counting)
    return calls


def test_a_portion_is_validated_once_per_version_and_body(
        done: asyncio.Future[None], parses: list[int]) -> None:
    worker = Worker(name="acme", done=done)
    transport = connect(worker)
    worker.data_received(personal_hello(20))
    for handle in ("h1", "h2", "h3"):
        worker.data_received(call_user(handle, "alice", 1, forward("1002")))
    assert routed(transport) == [("1002", 20)] * 3 and len(parses) == 1
    worker.data_received(call_user("h4", "alice", 2, forward("1003")))  # a new version
    assert routed(transport) == [("1003", 20)] and len(parses) == 2
    # Same version, other body: alice deleted and created again, written once more.
    worker.data_received(call_user("h5", "alice", 2, forward("1002")))
    assert routed(transport) == [("1002", 20)] and len(parses) == 3
    # Another user with the same version and body is another entry, not alice's.
    worker.data_received(call_user("h6", "bob", 2, forward("1002")))
    assert routed(transport) == [("1002", 20)] and len(parses) == 4
    # A body not in the store's normalised form is still right, just validated each time.
    raw = {"rules": [{"name": "fwd", "action": "forward", "target": "extension:1003"}]}
    worker.data_received(call_user("h7", "carol", 1, raw))
    worker.data_received(call_user("h8", "carol", 1, raw))
    assert routed(transport) == [("1003", 20)] * 2 and len(parses) == 6


def test_the_cache_is_bounded_and_forgotten_on_a_new_hello(
        done: asyncio.Future[None], parses: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "MAX_CACHED_RULES", 2)  # one rule each: two users
    worker = Worker(name="acme", done=done)
    transport = connect(worker)
    worker.data_received(personal_hello(20))
    body = REAL_PARSE({"rules": [{"name": "r", "action": "ring"}]}, extensions=None,
                      external_prefixes=(), ring_time=20).to_json()
    for n, user in enumerate(("u1", "u2", "u3", "u3", "u2", "u1")):
        worker.data_received(call_user(f"h{n}", user, 1, body))
    # u1 was dropped for u3 (least recently used), u2 was kept
    assert len(parses) == 4
    assert routed(transport) == [("1001", 20)] * 6
    # A new hello may change the tenant's ring time, a parameter of parsing: validated
    # again (this body has its ring time written out, so the answer stays the same).
    worker.data_received(personal_hello(30))
    worker.data_received(call_user("h9", "u1", 1, body))
    assert routed(transport) == [("1001", 20)] and len(parses) == 5


class CrmWorker(Worker):
    """A VTS built on the runtime with its own caller lookup (the `lookup` hook)."""

    def lookup(self, request: m.RouteRequest) -> dict[str, str]:
        return {"customer": f"account of {request.call.ani}"}


def test_an_ask_rule_answers_ask_with_the_lookup_and_what_the_rules_say_otherwise(
        done: asyncio.Future[None]) -> None:
    worker = CrmWorker(name="acme", done=done)
    transport = connect(worker)
    body = {"rules": [{"name": "pop", "action": "ask", "timeout": 12, "group": "sales"},
                      {"name": "fwd", "action": "forward", "target": "extension:1002"}]}
    worker.data_received(call_user("h1", "alice", 1, body))
    [ask] = [x for x in transport.sent() if isinstance(x, m.Ask)]
    assert (ask.handle, ask.timeout_ms, ask.group) == ("h1", 12_000, "sales")
    assert ask.lookup == {"customer": "account of +4930123"}
    assert isinstance(ask.otherwise, m.RouteTo)
    assert ask.otherwise.target == Target("extension", "1002")
    assert ask.trace is not None and ask.trace.rule == "#1 pop"
    # on the wire and back: the bridge reads the same message
    assert m.parse(m.to_wire(ask)) == ask
