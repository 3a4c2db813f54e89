"""Channel-variable names shared by the bridge and the venue dialplan.

The venue dialplan (asterisk-conf/tenants/*.conf, and later the rendered fragments)
reads these after `AGI(...)` returns; the bridge writes them with `SET VARIABLE`.
They are the only variables the bridge may write (`agi.wire.set_variable` checks).
"""

from __future__ import annotations

# The disposition: "route", "reject" or "default". Written last, so a session cut half
# way leaves it empty and the dialplan takes the venue's default route.
AB_ACTION = "AB_ACTION"
# The target extension inside the tenant's own internal context (route), validated.
AB_TARGET = "AB_TARGET"
# Why: reject cause ("busy"/"congestion") or the reason for a default route.
AB_CAUSE = "AB_CAUSE"

WRITABLE_VARIABLES = frozenset({AB_ACTION, AB_TARGET, AB_CAUSE})
