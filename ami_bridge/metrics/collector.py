"""The bridge's Prometheus series, built at scrape time from what the bridge already keeps.

Contract. `BridgeCollector` is a prometheus_client custom collector: on each scrape it
reads the `RouteStats` counts (per tenant and venue), the intermediary's pending calls
and global counters, the supervisor's VTS processes, the AMI client's session figures,
the bus between bridges (PostgreSQL store only) and the alarm book, and yields metric
families; nothing is pushed into prometheus_client objects on the call path. Every
configured venue has its request, disposition and alarm series from the start (at 0),
so `rate()` and alerts work before the first call.
It is registered in a private `CollectorRegistry` per bridge (`registry_for`), never in
the process-wide default one: tests run several bridges in one process. Scrapes run on
the event loop (ami_bridge.metrics.endpoint), so the plain dicts are read between two
callbacks and never change under the reader. Names and labels: docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ami_bridge.metrics.alarms import ALARMS, AlarmBook
from ami_bridge.metrics.routes import (
    KIND_DEFAULT,
    KIND_REJECT,
    KIND_ROUTE,
    LATENCY_BUCKETS,
    RouteStats,
)
from ami_bridge.status import version

if TYPE_CHECKING:
    from ami_bridge.ami_link import AmiLink
    from ami_bridge.cluster.bus import Bus
    from ami_bridge.config import VenueConfig
    from ami_bridge.intermediary import Intermediary
    from ami_bridge.supervision.supervisor import VtsProcess

PREFIX = "ami_bridge_"
FINAL_KINDS = (KIND_ROUTE, KIND_REJECT, KIND_DEFAULT)  # listed at 0 for every venue
_BUCKET_LABELS = [*(f"{bound:g}" for bound in LATENCY_BUCKETS), "+Inf"]


@dataclass(frozen=True)
class Sources:
    """Where the collector reads; callables because a reload swaps the config and a
    restart of the AMI link or a VTS swaps the objects behind them."""

    stats: RouteStats
    venues: Callable[[], Mapping[str, VenueConfig]]
    intermediary: Callable[[], Intermediary | None]
    processes: Callable[[], Mapping[str, VtsProcess]]
    ami: Callable[[], AmiLink | None]
    alarms: AlarmBook | None = None
    bus: Callable[[], Bus | None] = lambda: None


class BridgeCollector(Collector):
    def __init__(self, sources: Sources, *, wall_clock: Callable[[], float] = time.time,
                 started: float | None = None) -> None:
        self._sources = sources
        self._wall = wall_clock
        self.started = wall_clock() if started is None else started
        self._version = version()

    def collect(self) -> Iterator[Metric]:
        yield from self._build()
        yield from self._routing()
        yield from self._vts()
        yield from self._ami()
        yield from self._bus()
        yield from self._alarms()

    def _build(self) -> Iterator[Metric]:
        info = InfoMetricFamily(PREFIX + "build", "The running ami-bridge's version.",
                                labels=["version"])
        info.add_metric([self._version], {})
        yield info
        yield GaugeMetricFamily(PREFIX + "start_time_seconds",
                                "When the bridge started (Unix time).", value=self.started)
        yield GaugeMetricFamily(PREFIX + "uptime_seconds", "Seconds since the bridge started.",
                                value=max(0.0, self._wall() - self.started))

    def _routing(self) -> Iterator[Metric]:
        stats, venues = self._sources.stats, self._sources.venues()
        configured = {(v.tenant, name) for name, v in venues.items()}
        labels = ["tenant", "venue"]
        requests = CounterMetricFamily(PREFIX + "route_requests",
                                       "Route requests (FastAGI) by venue.", labels=labels)
        for key in sorted(configured | set(stats.requests)):
            requests.add_metric(list(key), stats.requests.get(key, 0))
        yield requests
        dispositions = CounterMetricFamily(
            PREFIX + "dispositions", "How route requests were answered: route, reject, "
            "default (final), treat, ask (the call stays pending).", labels=[*labels, "kind"])
        seen = dict(stats.dispositions)
        for tenant, venue in configured:
            for kind in FINAL_KINDS:
                seen.setdefault((tenant, venue, kind), 0)
        for by_kind, value in sorted(seen.items()):
            dispositions.add_metric(list(by_kind), value)
        yield dispositions
        defaults = CounterMetricFamily(PREFIX + "default_routes",
                                       "Default routes by reason (unknown-venue, no-vts, "
                                       "timeout, vts-lost, refused, ...).",
                                       labels=[*labels, "reason"])
        for by_reason, value in sorted(stats.defaults.items()):
            defaults.add_metric(list(by_reason), value)
        yield defaults
        yield _per_venue(CounterMetricFamily(PREFIX + "abandoned_calls",
                                             "Callers who hung up while their call waited.",
                                             labels=labels), stats.abandoned, configured)
        yield _per_venue(CounterMetricFamily(PREFIX + "venue_calls_entered",
                                             "Channels Asterisk created in a venue context "
                                             "(AMI Newchannel).", labels=labels),
                         stats.entered_calls, configured)
        latency = HistogramMetricFamily(
            PREFIX + "routing_latency_seconds", "From the route request reaching the bridge "
            "to the disposition written to Asterisk.", labels=labels)
        for key, histogram in sorted(stats.latency.items()):
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, histogram.counts, strict=True):
                cumulative += count
                buckets.append((label, cumulative))
            latency.add_metric(list(key), buckets, histogram.total)
        yield latency
        pending = GaugeMetricFamily(PREFIX + "pending_calls",
                                    "Calls waiting for a disposition, by venue.", labels=labels)
        intermediary = self._sources.intermediary()
        by_venue = intermediary.pending_by_venue() if intermediary is not None else {}
        for tenant, venue in sorted(configured):
            pending.add_metric([tenant, venue], by_venue.get(venue, 0))
        yield pending
        if intermediary is not None:
            counters = intermediary.counters
            yield CounterMetricFamily(PREFIX + "vts_messages_refused",
                                      "VTS messages the intermediary refused (not acted on).",
                                      value=counters.refused)
            yield CounterMetricFamily(PREFIX + "call_events",
                                      "Call events of connected VTS processes' calls (sent, "
                                      "or not subscribed to).",
                                      value=counters.call_events)

    def _vts(self) -> Iterator[Metric]:
        intermediary = self._sources.intermediary()
        processes = self._sources.processes()
        names = sorted(processes)
        connected = GaugeMetricFamily(PREFIX + "vts_connected",
                                      "1 when the VTS's link to the bridge is up.",
                                      labels=["vts"])
        restarts = CounterMetricFamily(PREFIX + "vts_restarts",
                                       "Times the supervisor started the VTS again.",
                                       labels=["vts"])
        flapping = GaugeMetricFamily(PREFIX + "vts_flapping",
                                     "1 while the VTS is held back as flapping.", labels=["vts"])
        pending = GaugeMetricFamily(PREFIX + "vts_pending_calls",
                                    "Calls waiting for the VTS's disposition.", labels=["vts"])
        for name in names:
            process = processes[name]
            up = intermediary is not None and intermediary.connected(name)
            connected.add_metric([name], 1 if up else 0)
            restarts.add_metric([name], process.restarts)
            flapping.add_metric([name], 1 if process.flapping else 0)
            count = intermediary.pending_count(name) if intermediary is not None else 0
            pending.add_metric([name], count)
        yield from (connected, restarts, flapping, pending)

    def _ami(self) -> Iterator[Metric]:
        link = self._sources.ami()
        if link is None:
            return
        client = link.client
        yield GaugeMetricFamily(PREFIX + "ami_connected", "1 while the AMI session is up.",
                                value=1 if client.connected else 0)
        yield CounterMetricFamily(PREFIX + "ami_connect_attempts",
                                  "AMI connection attempts.", value=client.attempts)
        yield CounterMetricFamily(PREFIX + "ami_reconnects",
                                  "AMI sessions established after the first one.",
                                  value=link.reconnects)
        yield CounterMetricFamily(PREFIX + "ami_events_received",
                                  "AMI events Asterisk sent the bridge (list replies "
                                  "included).", value=client.events_received)
        yield CounterMetricFamily(PREFIX + "ami_bytes_received",
                                  "Bytes Asterisk sent the bridge's AMI session.",
                                  value=client.bytes_received)
        yield GaugeMetricFamily(PREFIX + "ami_queue_high_water",
                                "Most AMI events ever held during a resync.",
                                value=client.queue_high_water)

    def _bus(self) -> Iterator[Metric]:
        bus = self._sources.bus()
        if bus is None:
            return
        yield GaugeMetricFamily(PREFIX + "bus_listening",
                                "1 while the bus (PostgreSQL LISTEN) is connected.",
                                value=1 if bus.listening else 0)
        for name, value, text in (
                ("published", bus.published, "Bus messages sent to the other bridges."),
                ("received", bus.received, "Bus messages from other bridges taken."),
                ("dropped", bus.dropped, "Bus messages dropped unsent (queue full)."),
                ("refused", bus.refused, "Bus messages too large for NOTIFY, not sent."),
                ("reconnects", bus.reconnects, "Bus listener sessions after the first."),
                ("resyncs", bus.resyncs, "Times the bus told its users to reload.")):
            yield CounterMetricFamily(PREFIX + "bus_" + name, text, value=value)

    def _alarms(self) -> Iterator[Metric]:
        alarms = self._sources.alarms
        if alarms is None:
            return
        gauge = GaugeMetricFamily(PREFIX + "alarm", "1 while the venue's alarm is raised "
                                  "(default_ratio, no_requests).",
                                  labels=["alarm", "tenant", "venue"])
        for name, venue in sorted(self._sources.venues().items()):
            for alarm in ALARMS:
                gauge.add_metric([alarm, venue.tenant, name],
                                 1 if alarms.raised(alarm, name) else 0)
        yield gauge


def _per_venue(family: CounterMetricFamily, counts: Mapping[tuple[str, str], int],
               configured: set[tuple[str, str]]) -> CounterMetricFamily:
    for key in sorted(configured | set(counts)):
        family.add_metric(list(key), counts.get(key, 0))
    return family


def registry_for(sources: Sources, *, started: float | None = None
                 ) -> tuple[CollectorRegistry, BridgeCollector]:
    """A private registry with the bridge's collector and the process's own series
    (CPU, memory, descriptors: prometheus_client's ProcessCollector, Linux only)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = BridgeCollector(sources, started=started)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry, collector
