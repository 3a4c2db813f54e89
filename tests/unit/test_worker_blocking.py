"""The VTS runtime's blocking loop (`serve_blocking`) on a real socket pair, and which
workers `run` gives it (the rest keep the event loop)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from ami_bridge.tenants import messages as m
from ami_bridge.tenants import worker as worker_mod
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION, FrameDecoder, encode
from ami_bridge.tenants.worker import Worker
from harness.fault_vts import FaultVts

RULES = [{"name": "hunt", "targets": ["1001", "queue:sales"], "overflow_after": 15}]
HELLO = m.Hello(v=PROTOCOL_VERSION, vts="acme", tenants={
    "acme": m.TenantRouting(timezone="UTC", targets=("1001",), rules=tuple(RULES))})
# A hung loop must fail the test, not hang the suite.
WAIT_S = 10.0


def request(handle: str) -> bytes:
    return encode(m.to_wire(m.RouteRequest(handle=handle, tenant="acme", venue="acme-venue",
                                           timeout_ms=2000, call=m.CallerData(ani="1"))))


class Running:
    """A Worker on `serve_blocking` in a thread; the test plays the bridge on `bridge`."""

    def __init__(self, worker: Worker, done: object) -> None:
        self.bridge, vts = socket.socketpair()
        self.bridge.settimeout(WAIT_S)
        self.worker = worker
        self.result: list[int] = []
        self._decoder = FrameDecoder()
        self.thread = threading.Thread(target=lambda: self.result.append(
            worker_mod.serve_blocking(worker, done, vts,  # type: ignore[arg-type]
                                      stop_on_signals=False)), daemon=True)
        self.thread.start()

    def read(self, count: int) -> list[m.Message]:
        out: list[m.Message] = []
        while len(out) < count:
            raw = self._decoder.next_message()
            if raw is None:
                data = self.bridge.recv(65536)
                assert data, f"EOF after {out}"
                self._decoder.receive_data(data)
                continue
            out.append(m.parse(raw))
        return out

    def ended(self) -> bool:
        self.thread.join(WAIT_S)
        return not self.thread.is_alive()


@pytest.fixture
def running() -> Iterator[Running]:
    done = worker_mod._Done()
    run = Running(Worker(name="acme", done=done), done)  # type: ignore[arg-type]
    yield run
    run.bridge.close()
    assert run.ended()


def test_the_blocking_loop_says_hello_and_answers_every_request(running: Running) -> None:
    assert running.read(1) == [m.Hello(v=PROTOCOL_VERSION, vts="acme", minor=PROTOCOL_MINOR,
                                         events=("agent_state",))]
    running.bridge.sendall(encode(m.to_wire(HELLO)))
    # three requests in one write and one split across two: all answered, in order
    running.bridge.sendall(request("h1") + request("h2") + request("h3"))
    frame = request("h4")
    running.bridge.sendall(frame[:20])
    running.bridge.sendall(frame[20:])
    answers = running.read(4)
    assert [a.handle for a in answers if isinstance(a, m.RouteTo)] == ["h1", "h2", "h3", "h4"]
    assert all(isinstance(a, m.RouteTo) and a.target == Target.extension("1001")
               for a in answers)


def test_the_blocking_loop_ends_at_eof_and_tells_the_worker() -> None:
    done = worker_mod._Done()
    run = Running(Worker(name="acme", done=done), done)  # type: ignore[arg-type]
    run.read(1)
    run.bridge.shutdown(socket.SHUT_WR)
    assert run.ended()
    assert run.result == [0]
    assert done.done()  # connection_lost ran
    run.bridge.close()


def test_a_framing_error_closes_the_link_from_the_vts_side() -> None:
    done = worker_mod._Done()
    run = Running(Worker(name="acme", done=done), done)  # type: ignore[arg-type]
    run.read(1)
    run.bridge.sendall(b"this is not json\n")
    assert run.ended()
    assert run.bridge.recv(100) == b""  # the VTS closed its end
    run.bridge.close()


def test_only_the_shipped_class_and_subclasses_that_say_so_leave_the_event_loop() -> None:
    class Quiet(Worker):
        pass

    class Lean(Worker):
        runs_without_event_loop = True

    class LeanChild(Lean):
        pass

    assert Worker.runs_without_event_loop
    assert Lean.runs_without_event_loop
    # a subclass may use the running loop (fault_vts answers late with call_later)
    assert not Quiet.runs_without_event_loop
    assert not LeanChild.runs_without_event_loop
    assert not FaultVts.runs_without_event_loop


def test_run_without_the_bridge_socket_says_so(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(worker_mod.FD_ENV, raising=False)
    made: list[Worker] = []

    def factory(done: asyncio.Future[None]) -> Worker:
        made.append(Worker(name="acme", done=done))
        return made[-1]

    assert worker_mod.run("acme", "warning", factory) == 2
    assert worker_mod.FD_ENV in capsys.readouterr().err
    assert len(made) == 1  # the blocking path: made once, never started
