"""The intermediary's observer (RouteStats), the scrape-time collector, the [metrics]
settings and the JSON log format: fake clock, no loop, no sockets."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ami_bridge import config as config_mod
from ami_bridge import logs
from ami_bridge.intermediary import Intermediary
from ami_bridge.metrics.alarms import ALARM_NO_REQUESTS, AlarmBook
from ami_bridge.metrics.collector import Sources, registry_for
from ami_bridge.metrics.routes import LATENCY_BUCKETS, MAX_UNKNOWN_CONTEXTS, Latency, RouteStats
from ami_bridge.status import version
from tests.unit.test_intermediary import (
    RAW,
    FakeClock,
    Link,
    Responder,
    disposition,
    env,
    with_venue,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class World:
    def __init__(self, raw: dict[str, Any] = RAW) -> None:
        self.clock = FakeClock()
        self.config = config_mod.parse(raw, path=Path("test.toml"))
        self.alarms = AlarmBook(window=10.0, default_ratio=0.5, min_calls=2)
        self.stats = RouteStats(clock=self.clock.time, venues=lambda: self.config.venues,
                                alarms=self.alarms)
        self.inter = Intermediary(config=self.config, clock=self.clock, observer=self.stats,
                                  latency_clock=self.clock.time)
        self.acme, self.globex = Link(), Link()
        self.inter.attach_vts("acme", self.acme)
        self.inter.attach_vts("globex", self.globex)
        self.registry, self.collector = registry_for(Sources(
            stats=self.stats, venues=lambda: self.config.venues,
            intermediary=lambda: self.inter, processes=dict, ami=lambda: None,
            alarms=self.alarms), started=0.0)

    def call(self, venue: str = "acme-venue", uniqueid: str = "1.1") -> tuple[str | None,
                                                                              Responder]:
        responder = Responder()
        return self.inter.route_request(env(venue, agi_uniqueid=uniqueid), responder), \
            responder

    def scrape(self) -> Samples:
        text = generate_latest(self.registry).decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_every_venue_is_listed_at_zero_before_the_first_call() -> None:
    got = World().scrape()
    for tenant, venue in (("acme", "acme-venue"), ("globex", "globex-venue")):
        assert sample(got, "ami_bridge_route_requests_total", tenant=tenant, venue=venue) == 0
        for kind in ("route", "reject", "default"):
            assert sample(got, "ami_bridge_dispositions_total", tenant=tenant, venue=venue,
                          kind=kind) == 0
        assert sample(got, "ami_bridge_pending_calls", tenant=tenant, venue=venue) == 0
        assert sample(got, "ami_bridge_alarm", alarm="no_requests", tenant=tenant,
                      venue=venue) == 0
    assert sample(got, "ami_bridge_build_info", version=version()) == 1
    assert version() == importlib.metadata.version("ami-bridge")
    assert sample(got, "ami_bridge_start_time_seconds") == 0.0
    assert ("process_start_time_seconds", frozenset()) in got  # the process collector


def test_requests_dispositions_defaults_and_latency_per_venue() -> None:
    w = World()
    handle, _ = w.call(uniqueid="1.1")
    w.clock.now += 0.003
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="extension:1001",
                                               trace={"rule": "sales"}))
    w.call(uniqueid="1.2")
    w.clock.run_until(0.2)  # acme's 0.1 s router timeout: default route
    w.inter.detach_vts("globex")
    w.call("globex-venue", uniqueid="2.1")  # no VTS: default at once
    w.call("nobody-venue", uniqueid="9.1")  # no venue: default at once
    handle, _ = w.call(uniqueid="1.3")
    got = w.scrape()
    acme = {"tenant": "acme", "venue": "acme-venue"}
    globex = {"tenant": "globex", "venue": "globex-venue"}
    assert sample(got, "ami_bridge_route_requests_total", **acme) == 3
    assert sample(got, "ami_bridge_route_requests_total", **globex) == 1
    assert sample(got, "ami_bridge_route_requests_total", tenant="", venue="nobody-venue") == 1
    assert sample(got, "ami_bridge_dispositions_total", kind="route", **acme) == 1
    assert sample(got, "ami_bridge_dispositions_total", kind="default", **acme) == 1
    assert sample(got, "ami_bridge_default_routes_total", reason="timeout", **acme) == 1
    assert sample(got, "ami_bridge_default_routes_total", reason="no-vts", **globex) == 1
    assert sample(got, "ami_bridge_default_routes_total", reason="unknown-venue", tenant="",
                  venue="nobody-venue") == 1
    assert sample(got, "ami_bridge_pending_calls", **acme) == 1  # 1.3 still waits
    assert sample(got, "ami_bridge_vts_messages_refused_total") == 0
    # the route took 3 ms, the timeout 100 ms: in their buckets, and summed
    assert sample(got, "ami_bridge_routing_latency_seconds_count", **acme) == 2
    assert sample(got, "ami_bridge_routing_latency_seconds_bucket", le="0.0025", **acme) == 0
    assert sample(got, "ami_bridge_routing_latency_seconds_bucket", le="0.005", **acme) == 1
    assert sample(got, "ami_bridge_routing_latency_seconds_bucket", le="0.05", **acme) == 1
    assert sample(got, "ami_bridge_routing_latency_seconds_bucket", le="0.25", **acme) == 2
    assert sample(got, "ami_bridge_routing_latency_seconds_bucket", le="+Inf", **acme) == 2
    assert sample(got, "ami_bridge_routing_latency_seconds_sum", **acme) == pytest.approx(
        0.103)


def test_abandon_treat_and_entered_calls_count() -> None:
    w = World(with_venue(router_timeout=5.0))  # time for a treatment
    handle, _ = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="welcome"))
    w.inter.abandon(handle)
    w.stats.entered("acme-venue")
    w.stats.entered("acme-internal")  # not a venue: not counted
    got = w.scrape()
    acme = {"tenant": "acme", "venue": "acme-venue"}
    assert sample(got, "ami_bridge_dispositions_total", kind="treat", **acme) == 1
    assert sample(got, "ami_bridge_abandoned_calls_total", **acme) == 1
    assert sample(got, "ami_bridge_venue_calls_entered_total", **acme) == 1
    assert not any(dict(labels).get("venue") == "acme-internal" for _, labels in got)


def test_the_alarm_gauge_follows_the_book() -> None:
    w = World()
    for _ in range(2):
        w.stats.entered("globex-venue")
    w.clock.now += 5
    [change] = w.alarms.evaluate(w.clock.now, {"acme-venue": "acme", "globex-venue": "globex"})
    assert (change.alarm, change.venue, change.raised) == (ALARM_NO_REQUESTS, "globex-venue",
                                                          True)
    got = w.scrape()
    assert sample(got, "ami_bridge_alarm", alarm="no_requests", tenant="globex",
                  venue="globex-venue") == 1
    assert sample(got, "ami_bridge_alarm", alarm="no_requests", tenant="acme",
                  venue="acme-venue") == 0


def test_ami_session_series_read_the_client_counters() -> None:
    w = World()
    client = SimpleNamespace(connected=True, attempts=2, events_received=321,
                             bytes_received=98765, queue_high_water=7)
    link: Any = SimpleNamespace(client=client, reconnects=1)
    registry, _ = registry_for(Sources(
        stats=w.stats, venues=lambda: w.config.venues, intermediary=lambda: w.inter,
        processes=dict, ami=lambda: link), started=0.0)
    got = {(s.name, frozenset(s.labels.items())): s.value
           for family in text_string_to_metric_families(generate_latest(registry).decode())
           for s in family.samples}
    assert sample(got, "ami_bridge_ami_events_received_total") == 321
    assert sample(got, "ami_bridge_ami_bytes_received_total") == 98765
    assert sample(got, "ami_bridge_ami_reconnects_total") == 1
    assert sample(got, "ami_bridge_ami_connected") == 1


def test_unknown_contexts_share_one_label_past_the_cap() -> None:
    w = World()
    for i in range(MAX_UNKNOWN_CONTEXTS + 5):
        w.call(f"ctx-{i}", uniqueid=f"9.{i}")
    venues = {dict(labels)["venue"] for name, labels in w.scrape()
              if name == "ami_bridge_route_requests_total" and dict(labels)["tenant"] == ""}
    assert len(venues) == MAX_UNKNOWN_CONTEXTS + 1 and "(other)" in venues


def test_latency_bucket_bounds_are_inclusive() -> None:
    histogram = Latency()
    for value in (LATENCY_BUCKETS[0], LATENCY_BUCKETS[-1] * 2):
        histogram.observe(value)
    assert histogram.counts[0] == 1 and histogram.counts[-1] == 1


def test_one_info_line_per_final_disposition_with_its_fields(
        caplog: pytest.LogCaptureFixture) -> None:
    w = World(with_venue(router_timeout=5.0))  # time for a treatment
    handle, _ = w.call(uniqueid="1700.42")
    assert handle is not None
    w.clock.now += 0.0015
    with caplog.at_level(logging.INFO, logger="ami_bridge.call"):
        w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="welcome"))
        w.inter.on_vts_message("acme", disposition(handle, action="route",
                                                   target="extension:1001",
                                                   trace={"rule": "sales"}))
    [record] = [r for r in caplog.records if r.name == "ami_bridge.call"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == ("call 1700.42 in venue acme-venue (tenant acme): route "
                                   "extension:1001, rule sales, 1.50 ms")
    line = json.loads(logs.JsonFormatter().format(record))
    assert {k: line[k] for k in ("level", "logger", "event", "uniqueid", "venue", "tenant",
                                 "disposition", "target", "rule", "latency_ms")} == {
        "level": "INFO", "logger": "ami_bridge.call", "event": "call", "uniqueid": "1700.42",
        "venue": "acme-venue", "tenant": "acme", "disposition": "route",
        "target": "extension:1001", "rule": "sales", "latency_ms": 1.5}
    assert line["ts"].endswith("Z") and "T" in line["ts"]


def test_json_lines_carry_tracebacks_and_text_keeps_the_old_format() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, "f", 1, "failed %s",
                                                   ("here",), exc_info=sys.exc_info())
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "failed here" and "RuntimeError: boom" in line["exc"]
    assert logs.formatter("text")._fmt == logs.TEXT_FORMAT
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.formatter("xml")


def _metrics(section: str) -> Any:
    raw = dict(RAW)
    raw["metrics"] = tomllib.loads(f"[metrics]\n{section}\n")["metrics"]
    return config_mod.parse(raw, path=Path("bridge.toml")).metrics


def test_metrics_section_off_when_absent_defaults_and_errors_naming_the_key() -> None:
    assert config_mod.parse(RAW, path=Path("bridge.toml")).metrics is None
    settings = _metrics("")
    assert (settings.host, settings.port, settings.alarm_window, settings.alarm_default_ratio,
            settings.alarm_min_calls) == ("127.0.0.1", 9108, 60.0, 0.5, 5)
    settings = _metrics('listen = "[::1]:9200"\nalarm_window = 5\nalarm_min_calls = 2')
    assert (settings.host, settings.port, settings.alarm_window, settings.alarm_min_calls) == (
        "::1", 9200, 5.0, 2)
    for bad, key in (('listen = "9108"', "metrics.listen"),
                     ("alarm_default_ratio = 1.5", "metrics.alarm_default_ratio"),
                     ("alarm_window = 0", "metrics.alarm_window"),
                     ("alarm_min_calls = 0", "metrics.alarm_min_calls"),
                     ("port = 9108", "metrics.port")):
        with pytest.raises(config_mod.ConfigError, match=f"bridge.toml: {key}: "):
            _metrics(bad)
