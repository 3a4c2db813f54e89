"""The bridge config's `[metrics]` section (docs/operations.md).

Absent: no endpoint and no alarms (the per-call log line and the counts behind the
series are kept anyway: they cost a few dict updates per call). Present: `listen`
(`HOST:PORT`, default 127.0.0.1:9108) is where `/metrics` is served; `alarm_window`
(seconds), `alarm_default_ratio` (0-1) and `alarm_min_calls` tune the per-venue
alarms. Errors name the key and the bad value, like every other section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ami_bridge.validation import Fail, count, listen, no_unknown, positive, table

# 9108: in the Prometheus exporters' port registry range, free of the well-known ones.
DEFAULT_LISTEN_PORT = 9108
# One minute of traffic: long enough for a rate at a few calls per minute to mean
# something, short enough that an operator sees a broken venue within the minute.
DEFAULT_ALARM_WINDOW = 60.0
# Half the calls of a venue taking its default route is far above any healthy venue
# (timeouts and a missing VTS are the usual causes); the operator tunes it per site.
DEFAULT_ALARM_DEFAULT_RATIO = 0.5
# Fewer calls than this in the window say nothing either way: no alarm.
DEFAULT_ALARM_MIN_CALLS = 5


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_LISTEN_PORT
    alarm_window: float = DEFAULT_ALARM_WINDOW
    alarm_default_ratio: float = DEFAULT_ALARM_DEFAULT_RATIO
    alarm_min_calls: int = DEFAULT_ALARM_MIN_CALLS


def parse_metrics(raw: Mapping[str, Any], fail: Fail) -> MetricsConfig | None:
    if "metrics" not in raw:
        return None
    section = table(raw, "metrics", fail)
    no_unknown(section, {"listen", "alarm_window", "alarm_default_ratio", "alarm_min_calls"},
               "metrics", fail)
    host, port = listen(section.get("listen", f"127.0.0.1:{DEFAULT_LISTEN_PORT}"),
                        "metrics.listen", fail)
    ratio = section.get("alarm_default_ratio", DEFAULT_ALARM_DEFAULT_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
        raise fail("metrics.alarm_default_ratio",
                   f"must be a number from 0 up to (not including) 1, got {ratio!r}")
    return MetricsConfig(
        host=host.strip("[]"),  # aiohttp binds the bare address
        port=port,
        alarm_window=positive(section, "alarm_window", DEFAULT_ALARM_WINDOW, "metrics", fail),
        alarm_default_ratio=float(ratio),
        alarm_min_calls=count(section, "alarm_min_calls", DEFAULT_ALARM_MIN_CALLS, "metrics",
                              fail))
