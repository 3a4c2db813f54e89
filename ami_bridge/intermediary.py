"""The intermediary: venues -> virtual transaction servers, pending calls, dispositions.

It owns the table of pending route requests. A route request enters from the FastAGI
side (`route_request`) and leaves exactly once, through `Responder.dispose`: with the
VTS's disposition, or with the venue's default route when the venue is unknown, its VTS
is not connected or is over its pending cap, the router timer fires, the VTS link is
lost, or the VTS answers with something the intermediary refuses. A caller hanging up
while pending (`abandon`) frees the entry and tells the VTS; no default route fires.

It trusts no VTS: a disposition must name a handle that this VTS was given and that is
still pending, and a route target must lie in the tenant's declared namespace. Anything
else is refused with an `error` message back to that VTS and never acted on; a handle
that was pending but belonged to another VTS is left alone (its own VTS still decides),
and the refusal is logged naming both tenants. Handles are random and opaque.

This module does no socket I/O: links and responders are passed in; the only
asyncio it uses is the event loop's timer (`call_later`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from ami_bridge.config import BridgeConfig, VenueConfig
from tenants.protocol import Message

log = logging.getLogger(__name__)

# Same alphabet as tenants.routing.TARGET_RE: an extension in the tenant's own context.
TARGET_RE = re.compile(r"[0-9A-Za-z_+*#-]{1,64}")  # fullmatch
REJECT_CAUSES = frozenset({"busy", "congestion"})
# Closed handles remembered to tell a late or duplicate reply *why* it is refused;
# bounded so a flood of calls cannot grow it without end.
MAX_REMEMBERED_CLOSED = 10_000
# Caller data forwarded to a VTS is cut to this many characters.
MAX_CALLER_FIELD = 80


@dataclass(frozen=True)
class Disposition:
    action: str  # "route" | "reject" | "default"
    target: str = ""
    cause: str = ""  # reject cause, or why the call was default-routed


class Responder(Protocol):
    """The AGI side of one pending call."""

    def dispose(self, disposition: Disposition) -> None: ...


class VtsLink(Protocol):
    def send(self, message: Message) -> None: ...


@dataclass
class Pending:
    handle: str
    venue: VenueConfig
    responder: Responder
    timer: asyncio.TimerHandle | None = None


@dataclass
class Counters:
    requests: int = 0
    routed: int = 0
    rejected: int = 0
    defaulted: dict[str, int] = field(default_factory=dict)
    abandoned: int = 0
    refused: int = 0


class Intermediary:
    def __init__(self, *, config: BridgeConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        self._links: dict[str, VtsLink] = {}
        self._pending: dict[str, Pending] = {}
        self._per_vts: dict[str, set[str]] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()
        self.counters = Counters()

    # -- configuration and links ---------------------------------------------------
    @property
    def config(self) -> BridgeConfig:
        return self._config

    def reload(self, config: BridgeConfig) -> None:
        """Swap the venue map. Pending calls keep the venue they entered with."""
        self._config = config
        for name in list(self._links):
            if name not in config.vts:
                self.detach_vts(name)

    def attach_vts(self, name: str, link: VtsLink) -> None:
        self._links[name] = link
        self._per_vts.setdefault(name, set())
        log.info("VTS %s connected (tenants: %s)", name,
                 ", ".join(self._config.vts[name].tenants) if name in self._config.vts else "?")

    def detach_vts(self, name: str) -> None:
        """The VTS link is gone: default-route every call it was deciding."""
        if self._links.pop(name, None) is None:
            return
        handles = self._per_vts.pop(name, set())
        log.warning("VTS %s disconnected; default-routing its %d pending calls", name, len(handles))
        for handle in list(handles):
            self._finish(handle, Disposition("default", cause="vts-lost"), notify=False)

    def connected(self, name: str) -> bool:
        return name in self._links

    def pending_count(self, vts: str | None = None) -> int:
        return len(self._pending) if vts is None else len(self._per_vts.get(vts, ()))

    # -- from the AGI side ---------------------------------------------------------
    def route_request(self, env: dict[str, str], responder: Responder) -> str | None:
        """Register a call waiting in a venue; returns its handle, or None if disposed."""
        self.counters.requests += 1
        context = env.get("agi_context", "")
        venue = self._config.venues.get(context)
        if venue is None:
            log.warning("route request from unknown venue %r (channel %s): default route",
                        context, env.get("agi_channel", "?"))
            self._count_default("unknown-venue")
            responder.dispose(Disposition("default", cause="unknown-venue"))
            return None
        link = self._links.get(venue.vts)
        if link is None:
            self._count_default("no-vts")
            responder.dispose(Disposition("default", cause="no-vts"))
            return None
        if len(self._per_vts[venue.vts]) >= self._config.max_pending_per_vts:
            log.warning("VTS %s has %d pending calls (cap): default route", venue.vts,
                        self._config.max_pending_per_vts)
            self._count_default("vts-overloaded")
            responder.dispose(Disposition("default", cause="vts-overloaded"))
            return None
        handle = secrets.token_hex(8)
        pending = Pending(handle=handle, venue=venue, responder=responder)
        pending.timer = self._loop.call_later(venue.router_timeout, self._timeout, handle)
        self._pending[handle] = pending
        self._per_vts[venue.vts].add(handle)
        link.send({
            "type": "route_request", "handle": handle, "tenant": venue.tenant,
            "venue": venue.context, "timeout_ms": int(venue.router_timeout * 1000),
            "call": _caller_data(env),
        })
        return handle

    def abandon(self, handle: str) -> None:
        """The caller hung up while pending."""
        pending = self._pending.get(handle)
        if pending is None:
            return
        self.counters.abandoned += 1
        self._release(handle, "abandoned")
        link = self._links.get(pending.venue.vts)
        if link is not None:
            link.send({"type": "event", "handle": handle, "event": "abandoned"})

    # -- from a VTS ----------------------------------------------------------------
    def on_vts_message(self, vts: str, message: Message) -> None:
        kind = message.get("type")
        if kind == "disposition":
            self._on_disposition(vts, message)
        else:
            self._refuse(vts, message.get("handle"), "unknown-type",
                         f"message type {kind!r} is not accepted from a VTS")

    def _on_disposition(self, vts: str, message: Message) -> None:
        handle = message.get("handle")
        pending = self._pending.get(handle) if isinstance(handle, str) else None
        if pending is None or not isinstance(handle, str):
            why = self._closed.get(handle, "unknown handle") if isinstance(handle, str) else (
                "missing handle")
            self._refuse(vts, handle, "not-pending", f"call is not pending ({why}); not acted on")
            return
        if pending.venue.vts != vts:
            owner = pending.venue.tenant
            mine = ", ".join(self._config.vts[vts].tenants) if vts in self._config.vts else vts
            log.error("isolation: VTS %s (tenant %s) acted on a handle of tenant %s; refused",
                      vts, mine, owner)
            self._refuse(vts, None, "not-yours", "handle was not given to this VTS")
            return
        try:
            disposition = self._check(pending, message)
        except ValueError as exc:
            log.error("VTS %s: disposition for tenant %s refused: %s; default route",
                      vts, pending.venue.tenant, exc)
            self._refuse(vts, handle, "invalid-disposition", str(exc))
            self._finish(handle, Disposition("default", cause="refused"), notify=True)
            return
        self._finish(handle, disposition, notify=False)

    def _check(self, pending: Pending, message: Message) -> Disposition:
        action = message.get("action")
        tenant = self._config.tenants[pending.venue.tenant]
        if action == "route":
            target = message.get("target")
            if not isinstance(target, str) or not TARGET_RE.fullmatch(target):
                raise ValueError(f"target {target!r} is not a valid extension")
            if target not in tenant.targets:
                other = [t.name for t in self._config.tenants.values() if target in t.targets]
                owner = f" (a target of tenant {other[0]})" if other else ""
                raise ValueError(f"target {target!r}{owner} is outside tenant "
                                 f"{tenant.name}'s namespace")
            return Disposition("route", target=target)
        if action == "reject":
            cause = message.get("cause", "busy")
            if cause not in REJECT_CAUSES:
                raise ValueError(f"reject cause {cause!r} is not one of {sorted(REJECT_CAUSES)}")
            return Disposition("reject", cause=cause)
        if action == "default":
            return Disposition("default", cause="vts")
        raise ValueError(f"action {action!r} is not route, reject or default")

    def _refuse(self, vts: str, handle: Any, code: str, text: str) -> None:
        self.counters.refused += 1
        link = self._links.get(vts)
        if link is not None:
            link.send({"type": "error", "handle": handle, "code": code, "message": text})

    # -- leaving the venue ---------------------------------------------------------
    def _timeout(self, handle: str) -> None:
        pending = self._pending.get(handle)
        if pending is None:
            return
        pending.timer = None
        log.info("router timeout for %s in venue %s: default route", handle,
                 pending.venue.context)
        self._finish(handle, Disposition("default", cause="timeout"), notify=True)

    def _finish(self, handle: str, disposition: Disposition, *, notify: bool) -> None:
        pending = self._release(handle, f"{disposition.action}:{disposition.cause}".rstrip(":"))
        if pending is None:
            return
        if disposition.action == "route":
            self.counters.routed += 1
        elif disposition.action == "reject":
            self.counters.rejected += 1
        else:
            self._count_default(disposition.cause)
        if notify:
            link = self._links.get(pending.venue.vts)
            if link is not None:
                link.send({"type": "event", "handle": handle, "event": "default_routed",
                           "reason": disposition.cause})
        pending.responder.dispose(disposition)

    def _release(self, handle: str, outcome: str) -> Pending | None:
        pending = self._pending.pop(handle, None)
        if pending is None:
            return None
        if pending.timer is not None:
            pending.timer.cancel()
        self._per_vts.get(pending.venue.vts, set()).discard(handle)
        self._closed[handle] = outcome
        if len(self._closed) > MAX_REMEMBERED_CLOSED:
            self._closed.popitem(last=False)
        return pending

    def _count_default(self, cause: str) -> None:
        self.counters.defaulted[cause] = self.counters.defaulted.get(cause, 0) + 1

    def hello_for(self, vts: str) -> Message:
        """The bridge's hello to a VTS: the routing protocols of the tenants it serves."""
        from tenants.protocol import PROTOCOL_VERSION

        served = self._config.vts[vts].tenants if vts in self._config.vts else ()
        return {
            "type": "hello", "v": PROTOCOL_VERSION, "vts": vts,
            "tenants": {
                name: {
                    "timezone": self._config.tenants[name].timezone,
                    "holidays": list(self._config.tenants[name].holidays),
                    "targets": sorted(self._config.tenants[name].targets),
                    "rules": [dict(r) for r in self._config.tenants[name].rules],
                }
                for name in served
            },
        }


def _caller_data(env: dict[str, str]) -> dict[str, str]:
    def cut(key: str) -> str:
        return env.get(key, "")[:MAX_CALLER_FIELD]

    return {
        "ani": cut("agi_callerid"), "ani_name": cut("agi_calleridname"),
        "dnis": cut("agi_extension"), "dnid": cut("agi_dnid"),
        "language": cut("agi_language"), "uniqueid": cut("agi_uniqueid"),
    }

