"""What the bridge process holds at one moment: descriptors, threads, children, tasks, RSS.

Contract. :func:`take` reads /proc for the bridge's pid (Linux only, like the sandbox)
and its `ctl status` answer for the asyncio task count (`runtime.tasks`; None when the
bridge does not report it). Children are all descendants (the VTS processes and the
bwrap/setpriv wrappers that confine them). :meth:`Census.leaks` compares two censuses:
a positive difference in descriptors, threads, children or tasks is a leak; RSS is
reported, not judged here (the soak judges it over time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.procs import alive, all_pids, parent_pid

# The quantities compared by Census.leaks (RSS is not among them: see the module doc).
LEAK_FIELDS = ("fds", "threads", "children", "tasks")


@dataclass(frozen=True)
class Census:
    fds: int
    threads: int
    children: int
    rss_kb: int
    tasks: int | None

    def leaks(self, after: Census) -> dict[str, int]:
        """after - self for each LEAK_FIELDS quantity both censuses have."""
        out = {}
        for name in LEAK_FIELDS:
            before_v, after_v = getattr(self, name), getattr(after, name)
            if before_v is not None and after_v is not None:
                out[name] = after_v - before_v
        return out


def status_field(path: Path, key: str) -> int:
    """An integer field of /proc/PID/status (`VmRSS`, `Threads`); 0 if absent."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return 0


def rss_kb(pid: int) -> int | None:
    try:
        return status_field(Path(f"/proc/{pid}/status"), "VmRSS")
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Live processes below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for p in all_pids():
        parent = parent_pid(p)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if alive(child):
                found.append(child)
                todo.append(child)
    return found


def take(pid: int, status: Mapping[str, Any] | None) -> Census:
    proc = Path(f"/proc/{pid}")
    tasks = None
    if status is not None and isinstance(status.get("runtime"), dict):
        tasks = int(status["runtime"]["tasks"])
    return Census(fds=len(list((proc / "fd").iterdir())),
                  threads=status_field(proc / "status", "Threads"),
                  children=len(descendants(pid)),
                  rss_kb=status_field(proc / "status", "VmRSS"),
                  tasks=tasks)
