"""The daemon's metrics, alarms and per-call log line, composed for one `Bridge`.

Contract. `Metrics(bridge, clock=loop.time)` is built before the intermediary: its
`stats` (a `RouteStats`) is the intermediary's observer and its `stats.entered` the AMI
link's Newchannel hook, whether or not the config has `[metrics]`, so the per-call log
line is always written. With `[metrics]` (read at start only, like `[api]`) it also
keeps an `AlarmBook`, and `start()` serves `/metrics` from a private registry and
evaluates the alarms (ami_bridge.metrics.endpoint); without it `start()` and `stop()`
do nothing. The bridge is read through `BridgeView`, so this package never imports the
daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from ami_bridge.metrics.collector import Sources, registry_for
from ami_bridge.metrics.endpoint import MetricsService, alarm_book
from ami_bridge.metrics.routes import RouteStats

if TYPE_CHECKING:
    from ami_bridge.ami_link import AmiLink
    from ami_bridge.cluster.bus import Bus
    from ami_bridge.config import BridgeConfig
    from ami_bridge.intermediary import Intermediary
    from ami_bridge.supervision.supervisor import VtsProcess


class BridgeView(Protocol):
    """What the metrics read of the daemon's `Bridge` (ami_bridge.daemon)."""

    @property
    def config(self) -> BridgeConfig: ...

    @property
    def intermediary(self) -> Intermediary | None: ...

    @property
    def ami(self) -> AmiLink | None: ...

    @property
    def processes(self) -> Mapping[str, VtsProcess]: ...

    @property
    def bus(self) -> Bus | None: ...


class Metrics:
    def __init__(self, bridge: BridgeView, *, clock: Callable[[], float]) -> None:
        self._bridge = bridge
        settings = bridge.config.metrics
        self.alarms = alarm_book(settings)
        self.stats = RouteStats(clock=clock, venues=lambda: bridge.config.venues,
                                alarms=self.alarms)
        self.service: MetricsService | None = None
        if settings is not None:
            registry, _ = registry_for(Sources(
                stats=self.stats, venues=lambda: bridge.config.venues,
                intermediary=lambda: bridge.intermediary, processes=lambda: bridge.processes,
                ami=lambda: bridge.ami, alarms=self.alarms,
                bus=lambda: bridge.bus))
            self.service = MetricsService(
                settings, registry, alarms=self.alarms, clock=clock,
                venues=lambda: {name: v.tenant for name, v in bridge.config.venues.items()})

    async def start(self) -> None:
        if self.service is not None:
            await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
