"""Property: the AGI side never hands one venue's environment to another tenant's VTS.

FastAGI sessions with random environments (venues of any tenant of a generated world,
unknown contexts, the route script with and without the operator's secret, caller data
that names other tenants) go through the real `RouteHandler` and `AgiResponder` into the
intermediary, against fake connections; VTSes answer (with their own or other tenants'
targets) and callers hang up in random order. Checked: a route request reaches only
the VTS of the session's own venue and carries that session's caller data and nothing
of another session; a session without the route script and secret reaches no VTS; every
session gets at most one answer, and a route in it (AB_TARGET) lies in the session's
tenant's namespace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.agi.protocol import Environment, Reply
from ami_bridge.agi.server import AgiConnection
from ami_bridge.agi_adapter import RouteHandler
from ami_bridge.calls import caller_data, check_namespace
from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants import messages as m
from tests.conftest import examples
from tests.unit.isolation_world import World, worlds
from tests.unit.test_intermediary import FakeClock
from tests.unit.test_isolation_property import Link, counting_handles

SECRET = "k9Qw-secret_route-0123456789"  # what a venue's AB_AGI_URL would carry
MSET_RE = re.compile(rb'EXEC MSet "([^"]*)"\n')


class FakeConn:
    """The part of AgiConnection that RouteHandler and AgiResponder use."""

    def __init__(self, number: int) -> None:
        self.peer = f"127.0.0.1:{40000 + number}"
        self.tag: object = None
        self.finished: list[list[bytes]] = []
        self.ran: list[bytes] = []
        self.closed = False

    def finish(self, commands: list[bytes]) -> None:
        self.finished.append(commands)

    def run(self, command: bytes, on_reply: Callable[[Reply], None] | None = None) -> None:
        self.ran.append(command)

    def close(self) -> None:
        self.closed = True


@st.composite
def sessions(draw: st.DrawFn, world: World, secret: str | None) -> list[dict[str, str]]:
    tokens = sorted(t for t, owners in world.tokens.owners.items() if owners)
    venues = [*world.all_venues, *(f"{t.name}-internal" for t in world.tenants), "default"]
    good = f"{secret}/route" if secret else "route"
    out = []
    for _ in range(draw(st.integers(1, 12))):
        env = {"agi_context": draw(st.sampled_from(venues)),
               "agi_network_script": draw(st.sampled_from([good, good, good, "route",
                                                           "x/route", ""]))}
        for key in draw(st.lists(st.sampled_from(["agi_callerid", "agi_calleridname",
                                                   "agi_extension", "agi_dnid",
                                                   "agi_uniqueid"]), unique=True)):
            env[key] = draw(st.sampled_from(tokens) | st.text(max_size=10))
        out.append(env)
    return out


@st.composite
def agi_scenarios(draw: st.DrawFn) -> tuple[World, str | None, list[dict[str, str]],
                                            list[tuple[str, int, int]]]:
    world = draw(worlds())
    secret = draw(st.sampled_from([None, SECRET]))
    envs = draw(sessions(world, secret))
    after = draw(st.lists(st.tuples(st.sampled_from(["answer", "answer", "hangup", "time"]),
                                    st.integers(0, 31), st.integers(0, 31)), max_size=20))
    return world, secret, envs, after


def mset(commands: list[bytes]) -> dict[str, str]:
    found = [MSET_RE.fullmatch(c) for c in commands]
    pairs = [p.split("=", 1) for f in found if f for p in f.group(1).decode().split(",")]
    return dict(pairs)


@settings(max_examples=examples(200), deadline=None, database=None)
@given(agi_scenarios())
def test_route_handler_keeps_each_environment_in_its_venue(
        scenario: tuple[World, str | None, list[dict[str, str]],
                        list[tuple[str, int, int]]]) -> None:
    world, secret, envs, after = scenario
    config = world.configs[0]
    clock = FakeClock()
    with mock.patch("ami_bridge.intermediary.secrets.token_hex", counting_handles()):
        inter = Intermediary(config=config, clock=clock)
        links = {name: Link(name) for name in config.vts}
        for name, link in links.items():
            inter.attach_vts(name, link)
        handler = RouteHandler(inter, secret=secret, clock=clock.time)
        conns = [FakeConn(i) for i in range(len(envs))]
        for conn, env in zip(conns, envs, strict=True):
            handler.on_environment(cast(AgiConnection, conn), Environment(env))
        handles = {cast(str, c.tag): (c, e) for c, e in zip(conns, envs, strict=True)
                   if isinstance(c.tag, str)}
        for action, i, j in after:
            if action == "time":
                clock.run_until(clock.now - clock.start + 0.3 * (1 + i % 8))
                continue
            conn = conns[i % len(conns)]
            if action == "hangup":
                handler.on_gone(cast(AgiConnection, conn))
            elif isinstance(conn.tag, str):
                vts = sorted(links)[j % len(links)]
                spec = world.tenants[j % len(world.tenants)]
                target = spec.all_targets[i % len(spec.all_targets)]
                inter.on_vts_message(vts, {"type": "disposition", "handle": conn.tag,
                                           "action": "route", "target": f"extension:{target}"})

    authorised = f"{secret}/route" if secret else "route"
    for name, link in links.items():
        for message in link.sent:
            if isinstance(message, m.RouteRequest):
                conn, env = handles[message.handle]
                venue = config.venues[env["agi_context"]]
                assert env["agi_network_script"] == authorised, message
                assert (message.venue, message.tenant) == (venue.context, venue.tenant)
                assert venue.vts == name, f"{message} reached VTS {name}"
                assert message.call == caller_data(env), message  # this session's, only
            elif isinstance(message, m.Abandoned | m.DefaultRouted):
                conn, env = handles[message.handle]
                assert config.venues[env["agi_context"]].vts == name, message
    for conn, env in zip(conns, envs, strict=True):
        assert len(conn.finished) <= 1, conn.finished
        variables = mset(conn.finished[0]) if conn.finished else {}
        if env["agi_network_script"] != authorised:
            assert conn.tag is None and variables.get("AB_ACTION") == "default"
        if variables.get("AB_ACTION") == "route":
            tenant = config.tenants[config.venues[env["agi_context"]].tenant]
            check_namespace(tenant, m.Target(variables["AB_KIND"], variables["AB_TARGET"]))
