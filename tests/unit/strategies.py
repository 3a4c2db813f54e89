"""Hypothesis strategies for the VTS message properties: any JSON, and dispositions."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ami_bridge.tenants.messages import DISPOSITIONS

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=20))
# Any value json.loads can return (NaN and the infinities included: it accepts them).
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Field names a disposition uses, plus any other; values that look right, or anything.
FIELDS = st.sampled_from(["handle", "action", "target", "dial_timeout", "cause", "prompt",
                          "moh", "collect_digits", "timeout_ms", "type"]) | st.text(max_size=8)
PLAUSIBLE = st.sampled_from([
    "route", "treatment", "reject", "default", "extension:1001", "queue:sales",
    "external:+4930123", "1001", "extension:2001", "busy", "congestion", "welcome", 0, 1, 4,
    3000, True, False, None, "", [], {}, ["extension:1001"], "extension:1001\nEXEC",
])
ACTIONS = st.sampled_from([d.ACTION for d in DISPOSITIONS]) | JSON


@st.composite
def dispositions(draw: st.DrawFn, handle: str) -> dict[str, Any]:
    """A disposition object for `handle` with arbitrary JSON in arbitrary fields."""
    message: dict[str, Any] = {"type": "disposition", "handle": handle,
                               "action": draw(ACTIONS)}
    message.update(draw(st.dictionaries(FIELDS, PLAUSIBLE | JSON, max_size=5)))
    message["type"] = "disposition"
    if draw(st.booleans()):
        message["handle"] = handle  # mostly its own handle, sometimes whatever was drawn
    return message
