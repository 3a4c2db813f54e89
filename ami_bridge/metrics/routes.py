"""Per-venue routing counts and the per-call log line: the intermediary's observer.

Contract. `RouteStats` implements `ami_bridge.intermediary.RouteObserver`: the
intermediary tells it of every route request, every step that keeps a call pending
(treat, ask), every final disposition (kind `route`, `reject` or `default`, the default
route's reason, the latency from request to answer, the rule the VTS named) and every
abandon. It keeps plain integer counts keyed by (tenant, venue) and a latency histogram
per (tenant, venue) as bucket counts: a few dict updates and one bisect per call, far
below the prometheus_client objects' locks and label lookups (docs/operations.md has
the measurement); `ami_bridge.metrics.collector` reads them at scrape time. It writes
one INFO line per final disposition to the `ami_bridge.call` logger (structured fields
for the JSON format, ami_bridge.logs) and feeds the `AlarmBook`, when there is one.
Calls Asterisk shows entering a venue (`entered`, from the AMI link) count too.
A route request from a context that is no venue counts under tenant "" and that
context, for at most `MAX_UNKNOWN_CONTEXTS` contexts (then under `UNKNOWN_OTHER`).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Protocol

from ami_bridge.metrics.alarms import AlarmBook

call_log = logging.getLogger("ami_bridge.call")

# Upper bounds (seconds) of the routing latency buckets: a decision of the bridge alone
# takes ~0.1-0.5 ms (bench/README.md), a VTS answer ~1 ms, router timeouts are seconds.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0)
KIND_ROUTE, KIND_REJECT, KIND_DEFAULT = "route", "reject", "default"
KIND_TREAT, KIND_ASK = "treat", "ask"
# Route requests from contexts that are no venue are labelled with the context; only
# Asterisk's allowed peers reach that code, but a dialplan error could still spread
# calls over many contexts: past this many, they share one label value.
MAX_UNKNOWN_CONTEXTS = 100
UNKNOWN_OTHER = "(other)"

Key = tuple[str, str]  # (tenant, venue)


class Venue(Protocol):
    """What is read of a configured venue (ami_bridge.config.VenueConfig)."""

    @property
    def tenant(self) -> str: ...


class Latency:
    """One histogram: per-bucket counts (the last is +Inf) and the sum of observations."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le=)
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class RouteStats:
    def __init__(self, *, clock: Callable[[], float],
                 venues: Callable[[], Mapping[str, Venue]],
                 alarms: AlarmBook | None = None) -> None:
        """`clock`: the intermediary's monotonic clock; `venues`: the configured venues
        by context (read per `entered`, so a reload is seen at once)."""
        self._clock = clock
        self._venues = venues
        self.alarms = alarms
        self.requests: dict[Key, int] = {}
        self.dispositions: dict[tuple[str, str, str], int] = {}  # (tenant, venue, kind)
        self.defaults: dict[tuple[str, str, str], int] = {}  # (tenant, venue, reason)
        self.abandoned: dict[Key, int] = {}
        self.entered_calls: dict[Key, int] = {}
        self.latency: dict[Key, Latency] = {}
        self._unknown: set[str] = set()

    def _key(self, tenant: str, venue: str) -> Key:
        if tenant or venue in self._unknown:
            return tenant, venue
        if len(self._unknown) < MAX_UNKNOWN_CONTEXTS:
            self._unknown.add(venue)
            return tenant, venue
        return tenant, UNKNOWN_OTHER

    # -- the intermediary's observer ---------------------------------------------------
    def requested(self, tenant: str, venue: str) -> None:
        key = self._key(tenant, venue)
        self.requests[key] = self.requests.get(key, 0) + 1
        if self.alarms is not None and tenant:
            self.alarms.requested(venue, tenant, self._clock())

    def stepped(self, tenant: str, venue: str, kind: str) -> None:
        """A treatment or an ask: the call stays pending."""
        key = (tenant, venue, kind)
        self.dispositions[key] = self.dispositions.get(key, 0) + 1

    def disposed(self, tenant: str, venue: str, kind: str, cause: str, latency: float, *,
                 uniqueid: str = "", target: str = "", rule: str = "") -> None:
        tenant_venue = self._key(tenant, venue)
        key = (*tenant_venue, kind)
        self.dispositions[key] = self.dispositions.get(key, 0) + 1
        if kind == KIND_DEFAULT:
            reason = (*tenant_venue, cause)
            self.defaults[reason] = self.defaults.get(reason, 0) + 1
        histogram = self.latency.get(tenant_venue)
        if histogram is None:
            histogram = self.latency[tenant_venue] = Latency()
        histogram.observe(latency)
        if self.alarms is not None and tenant:
            self.alarms.disposed(venue, tenant, self._clock(), default=kind == KIND_DEFAULT)
        if call_log.isEnabledFor(logging.INFO):
            self._log_call(tenant, venue, kind, cause, latency, uniqueid, target, rule)

    def abandoned_call(self, tenant: str, venue: str) -> None:
        key = self._key(tenant, venue)
        self.abandoned[key] = self.abandoned.get(key, 0) + 1

    # -- from the AMI link -------------------------------------------------------------
    def entered(self, context: str) -> None:
        """A channel was created in `context` (AMI Newchannel); counted if a venue's."""
        venue = self._venues().get(context)
        if venue is None:
            return
        tenant = venue.tenant
        key = (tenant, context)
        self.entered_calls[key] = self.entered_calls.get(key, 0) + 1
        if self.alarms is not None:
            self.alarms.entered(context, tenant, self._clock())

    # -- the per-call line -------------------------------------------------------------
    @staticmethod
    def _log_call(tenant: str, venue: str, kind: str, cause: str, latency: float,
                  uniqueid: str, target: str, rule: str) -> None:
        what = f"{kind} {target}" if target else kind
        if cause:
            what += f" ({cause})"
        call_log.info(
            "call %s in venue %s (tenant %s): %s, rule %s, %.2f ms", uniqueid or "-",
            venue, tenant or "-", what, rule or "-", latency * 1000,
            extra={"event": "call", "uniqueid": uniqueid, "venue": venue, "tenant": tenant,
                   "disposition": kind, "target": target, "cause": cause, "rule": rule,
                   "latency_ms": round(latency * 1000, 3)})
