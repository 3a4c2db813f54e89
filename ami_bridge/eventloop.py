"""Run a coroutine on uvloop when it is installed, else on the stock asyncio loop.

uvloop is a dependency (bench/README.md: less CPU per routed call, more throughput); the
fallback keeps the bridge and the VTS runtime working where it cannot be installed.
AMI_BRIDGE_LOOP=asyncio forces the stock loop (for comparisons and debugging). Both the
daemon (`ami-bridge run`) and the shipped VTS runtime (`ami_bridge.tenants.worker`) start
their loop here, so it lives in neither's package.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("AMI_BRIDGE_LOOP") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
