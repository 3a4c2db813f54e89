"""The dialplan contract: what a venue and the bridge promise each other, in one place.

A venue context (rendered by `ami_bridge.dialplan.render`, or hand-written) runs
`AGI(${AB_AGI_URL}/route,${AB_LAST},${DIALSTATUS})`; the bridge's FastAGI adapter
answers the `route` script only, reads the two arguments back (`agi_arg_1`,
`agi_arg_2`), and writes the disposition into the channel variables below (only these:
`ami_bridge.agi.wire` refuses any other name), AB_ACTION last. For a route the venue
Gosubs into the tenant's own context for the target's kind, `<tenant>-<suffix>` with the
suffix from `KIND_CONTEXT`, and remembers what it tried in AB_LAST as `KIND:VALUE`, the
spelling of `ami_bridge.tenants.messages.Target`. The renderer, the adapter, the
intermediary and the linter take every name from here. Pure data: no I/O.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from ami_bridge.namespace import (
    KIND_EXTENSION,
    KIND_EXTERNAL,
    KIND_PHONES,
    KIND_QUEUE,
    KIND_VOICEMAIL,
)

# The dialplan global holding the bridge's FastAGI URL (agi://host:port), set by the
# operator in [globals]; and the script name the venue asks for.
AB_AGI_URL = "AB_AGI_URL"
ROUTE_SCRIPT = "route"
# Venue failover (docs/scale-out.md): further bridges in [globals] AB_AGI_URL_2,
# AB_AGI_URL_3, ... (consecutive, nearest first). A FastAGI venue whose request got no
# disposition (AB_ACTION still empty: the bridge refused the connection, or died after
# Asterisk sent the AGI environment) asks the next one; AB_AGI_NEXT is the venue's
# cursor, the number of the next URL to try, reset by every route request.
AB_AGI_URL_FAILOVER = "AB_AGI_URL_"
AB_AGI_NEXT = "AB_AGI_NEXT"
FIRST_FAILOVER_URL = 2
# Default-route causes (AB_CAUSE) that say "this bridge cannot route now", not "this call
# has no route": its VTS is not connected (a bridge still starting: measured, 16 calls
# at 10 calls/s in the kill test, docs/scale-out.md), or it is stopping. The venue asks
# the next bridge for these too when there is one (the intermediary uses these names).
CAUSE_NO_VTS = "no-vts"
CAUSE_STOPPING = "stopping"
FAILOVER_CAUSES = (CAUSE_NO_VTS, CAUSE_STOPPING)
# A venue whose driver is AsyncAGI asks over the bridge's AMI session instead:
# `AGI(agi:async,${AB_LAST},${DIALSTATUS})` (ami_bridge.drivers.asyncagi).
ASYNC_AGI = "agi:async"

# -- written by the bridge ----------------------------------------------------------------
# The disposition: one of ACTIONS. Written last, so a session cut half way leaves it
# empty and the dialplan takes the venue's default route.
AB_ACTION = "AB_ACTION"
ACTION_ROUTE, ACTION_REJECT, ACTION_DEFAULT = "route", "reject", "default"
ACTIONS = (ACTION_ROUTE, ACTION_REJECT, ACTION_DEFAULT)
# A route's target: its kind (namespace.TARGET_KINDS) and its value, validated.
AB_KIND = "AB_KIND"
AB_TARGET = "AB_TARGET"
# Why: reject cause (namespace.REJECT_CAUSES) or the reason for a default route.
AB_CAUSE = "AB_CAUSE"
# Dial timeout in seconds for this route (overflow to the next target after N seconds);
# the venue resets it to DEFAULT_DIAL_TIMEOUT before every route request.
AB_DIAL_TIMEOUT = "AB_DIAL_TIMEOUT"
DEFAULT_DIAL_TIMEOUT = 20

# For a `phones` target (personal venues): the devices to ring at once, joined by '&',
# taken by the bridge from the tenant file's `extensions` (never from a VTS).
AB_DIAL = "AB_DIAL"

WRITABLE_VARIABLES = frozenset({AB_ACTION, AB_TARGET, AB_CAUSE, AB_KIND, AB_DIAL_TIMEOUT,
                                AB_DIAL})

# -- kept by the venue ------------------------------------------------------------------
# What the call was last routed to, `KIND:VALUE`, passed back as the first AGI argument
# when the call returns to the venue (busy, no answer); Asterisk's DIALSTATUS for it is
# the second. Empty on a call's first request.
AB_LAST = "AB_LAST"
DIALSTATUS = "DIALSTATUS"
AGISTATUS = "AGISTATUS"  # Asterisk's: SUCCESS only when the bridge answered
# The ARI driver's venues: Stasis(STASIS_APP,...) sets STASISSTATUS to SUCCESS only when
# the bridge's ARI application took the call and continued it (FAILED at once when the
# application is not registered: the bridge is down or its WebSocket is, docs/drivers.md).
STASISSTATUS = "STASISSTATUS"
DEFAULT_STASIS_APP = "ami-bridge"  # [ari] app's default
ROUTE_ARGS = (AB_LAST, DIALSTATUS)  # the route script's arguments, in order


def agi_arg(variable: str) -> str:
    """The AGI environment key under which a route argument arrives: `agi_arg_N`."""
    return f"agi_arg_{ROUTE_ARGS.index(variable) + 1}"


DIAL_STATUS_RE = re.compile(r"[A-Z]{1,20}")  # fullmatch; Asterisk's DIALSTATUS values

# Target kind -> suffix of the tenant's context that serves it (`acme-queues`). The
# venue holds this map in channel variables named by `kind_variable` and Gosubs into
# `<tenant>-${AB_CTX_${AB_KIND}}`: an unknown kind gives an empty suffix, a context
# that does not exist, and the venue's fallback.
KIND_CONTEXT = MappingProxyType({KIND_EXTENSION: "internal", KIND_QUEUE: "queues",
                                 KIND_EXTERNAL: "outbound"})
# A personal venue also routes to a user's mailbox (`<tenant>-voicemail`, one extension
# per personal number) and rings `phones` itself (Dial(${AB_DIAL}), no context).
PERSONAL_KIND_CONTEXT = MappingProxyType({**KIND_CONTEXT, KIND_VOICEMAIL: "voicemail"})
PHONES_KIND = KIND_PHONES
KIND_VARIABLE_PREFIX = "AB_CTX_"


def kind_variable(kind: str) -> str:
    return f"{KIND_VARIABLE_PREFIX}{kind}"


def tenant_context(tenant: str, kind: str) -> str:
    """The context of `tenant` that serves targets of `kind`."""
    return f"{tenant}-{PERSONAL_KIND_CONTEXT[kind]}"
