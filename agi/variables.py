"""Channel-variable names shared by the bridge and the venue dialplan.

The venue dialplan (asterisk-conf/tenants/*.conf, and later the rendered fragments)
reads these after `AGI(...)` returns; the bridge writes them with `SET VARIABLE`.
They are the only variables the bridge may write (`ami_bridge.agi.wire.set_variable` checks).
"""

from __future__ import annotations

# The disposition: "route", "reject" or "default". Written last, so a session cut half
# way leaves it empty and the dialplan takes the venue's default route.
AB_ACTION = "AB_ACTION"
# The target: an extension of the tenant's own context named by AB_KIND, validated.
AB_TARGET = "AB_TARGET"
# Why: reject cause ("busy"/"congestion") or the reason for a default route.
AB_CAUSE = "AB_CAUSE"

# Which of the tenant's own contexts a route goes to: the venue Gosubs into
# `<tenant>-<AB_KIND>`, so a kind can never name another tenant's context.
AB_KIND = "AB_KIND"
KIND_INTERNAL = "internal"  # extensions, agents
KIND_QUEUE = "queues"  # queues / agent groups
KIND_OUTBOUND = "outbound"  # external numbers through the tenant's own outbound route
KINDS = frozenset({KIND_INTERNAL, KIND_QUEUE, KIND_OUTBOUND})
# Dial timeout in seconds for this route (overflow to the next target after N seconds).
AB_DIAL_TIMEOUT = "AB_DIAL_TIMEOUT"

WRITABLE_VARIABLES = frozenset({AB_ACTION, AB_TARGET, AB_CAUSE, AB_KIND, AB_DIAL_TIMEOUT})
