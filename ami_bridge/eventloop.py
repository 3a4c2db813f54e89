"""Run a coroutine on uvloop when it is installed, else on the stock asyncio loop.

uvloop is a dependency (bench/README.md: less CPU per routed call, more throughput); the
fallback keeps the bridge and the VTS runtime working where it cannot be installed.
AMI_BRIDGE_LOOP=asyncio forces the stock loop (for comparisons and debugging). Both the
daemon (`ami-bridge run`) and the shipped VTS runtime (`ami_bridge.tenants.worker`) start
their loop here, so it lives in neither's package. On the stock loop of Python 3.11 the
subprocesses (the exec'd VTS, the fork server) are watched through pidfds
(`asyncio.PidfdChildWatcher`: one descriptor per child, polled by the loop) instead of
the default `ThreadedChildWatcher`, which held one waitpid thread per VTS (1,001 threads
at 1,000 VTS, bench/README.md "tenants-scale"); Python 3.12 picks pidfds by itself, and
uvloop watches children with libuv's SIGCHLD handler, no thread either.
"""

from __future__ import annotations

import asyncio
import os
import sys
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
    return asyncio.run(watching_children_by_pidfd(main))


def pidfds_work() -> bool:
    """os.pidfd_open exists and the kernel (>= 5.3) and any seccomp filter allow it."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


async def watching_children_by_pidfd(main: Coroutine[Any, Any, T]) -> T:
    """Await `main` with a pidfd child watcher attached to the running (stock) loop, on
    Python 3.11 where that is not the default; the default comes back afterwards, so a
    later loop in this process is not handed a watcher of a closed one."""
    if sys.version_info >= (3, 12) or not pidfds_work():
        return await main
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    try:
        return await main
    finally:
        # Not watcher.close(): children still watched (none after a clean stop) would
        # make it warn; its descriptors go with the loop's end.
        asyncio.set_child_watcher(asyncio.ThreadedChildWatcher())
