"""Graceful stop and readiness waits (ami_bridge.lifecycle) on a fake clock.

The intermediary is the real one (the `World` of test_intermediary: scripted VTS links
and responders); the clock is a counter that moves only when the code under test reads
it, so bounds are checked without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge import lifecycle
from ami_bridge.calls import Disposition
from ami_bridge.intermediary import CAUSE_STOPPING
from ami_bridge.sdnotify import Notifier
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.messages import Target
from tests.unit.test_intermediary import RAW, Responder, World, disposition, env


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__("")
        self.sent: list[dict[str, str]] = []

    def notify(self, **fields: str) -> bool:
        self.sent.append(fields)
        return True


class Ticks:
    """A clock that advances `step` seconds per read and runs `at[n]` on the n-th read."""

    def __init__(self, step: float = 0.1,
                 at: dict[int, Callable[[], object]] | None = None) -> None:
        self.now, self.step, self.reads, self.at = 0.0, step, 0, at or {}

    def __call__(self) -> float:
        self.reads += 1
        if self.reads in self.at:
            self.at[self.reads]()
        self.now += self.step
        return self.now


def drain(world: World, clock: Ticks, *, sessions: Callable[[], int] = lambda: 0,
          notifier: Notifier | None = None) -> int:
    return asyncio.run(lifecycle.drain(
        world.inter, bound=lifecycle.drain_bound(world.inter.config), open_sessions=sessions,
        clock=clock, notifier=notifier or Recorder(), flush=0.5, poll=0))


def test_bound_is_the_longest_router_timeout_plus_the_margin() -> None:
    raw = {**RAW, "bridge": {"router_timeout": 0.2}}
    config = config_mod.parse(raw, path=Path("t.toml"))
    # acme-venue has 0.1, globex-venue inherits 0.2
    assert lifecycle.drain_bound(config) == pytest.approx(0.2 + lifecycle.DRAIN_MARGIN_S)


def test_a_vts_answer_during_the_drain_is_the_calls_answer() -> None:
    world = World()
    handle, responder = world.call()

    def answer() -> None:
        world.inter.on_vts_message("acme", disposition(handle, action="route",
                                                       target="extension:1001"))

    forced = drain(world, Ticks(at={3: answer}))
    assert forced == 0
    assert [d.target for d in responder.dispositions] == [Target.extension("1001")]
    assert world.acme.of_type(m.DefaultRouted) == []


def test_calls_still_pending_at_the_bound_are_default_routed_as_stopping(
        caplog: pytest.LogCaptureFixture) -> None:
    world = World()  # the fake scheduler never fires: the router timers never expire
    handle, responder = world.call()
    notifier = Recorder()
    clock = Ticks()
    assert drain(world, clock, notifier=notifier) == 1
    assert clock.now >= lifecycle.drain_bound(world.inter.config)
    assert responder.dispositions == [Disposition("default", cause=CAUSE_STOPPING)]
    assert [(e.handle, e.reason) for e in world.acme.of_type(m.DefaultRouted)] == [
        (handle, CAUSE_STOPPING)]
    assert world.inter.pending_count() == 0
    assert {"STATUS": "stopping: 1 calls pending"} in notifier.sent
    assert "1 calls still pending" in caplog.text


def test_no_pending_calls_means_no_wait() -> None:
    world = World()
    clock = Ticks()
    assert drain(world, clock) == 0
    assert clock.now < 1.0


def test_answers_on_the_wire_are_waited_for_within_a_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    open_sessions = [2]

    def one_left() -> None:
        open_sessions[0] = 1

    drain(world, Ticks(step=0.01, at={5: one_left}), sessions=lambda: open_sessions[0])
    assert "1 AGI sessions still open after 0.5 s" in caplog.text


def test_after_the_drain_a_late_route_request_is_default_routed_at_once() -> None:
    world = World()
    world.inter.drain()
    responder = Responder()
    assert world.inter.route_request(env("acme-venue"), responder) is None
    assert responder.dispositions == [Disposition("default", cause=CAUSE_STOPPING)]
    assert world.acme.of_type(m.RouteRequest) == []


def test_vts_links_closing_after_the_drain_are_not_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    world.inter.drain()
    with caplog.at_level(logging.INFO):
        world.inter.detach_vts("acme")
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "the bridge is stopping" in caplog.text


def test_a_vts_lost_while_running_is_still_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    world.inter.detach_vts("acme")
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_ready_once_every_vts_is_connected() -> None:
    notifier, up = Recorder(), {"acme"}

    def connect_globex() -> None:
        up.add("globex")

    missing = asyncio.run(lifecycle.wait_ready(
        ["globex", "acme"], up.__contains__, notifier=notifier,
        clock=Ticks(at={4: connect_globex}), timeout=5.0, poll=0))
    assert missing == []
    assert notifier.sent == [{"READY": "1", "STATUS": "routing; 2 VTS connected"}]


def test_ready_anyway_after_the_bound_naming_the_missing_vts(
        caplog: pytest.LogCaptureFixture) -> None:
    notifier = Recorder()
    missing = asyncio.run(lifecycle.wait_ready(
        ["acme", "globex"], {"acme"}.__contains__, notifier=notifier, clock=Ticks(),
        timeout=1.0, poll=0))
    assert missing == ["globex"]
    assert notifier.sent == [{"READY": "1",
                              "STATUS": "routing; VTS not connected: globex"}]
    assert "VTS not connected 1 s after start: globex" in caplog.text
