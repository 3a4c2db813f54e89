"""Live call pops (STUB until the hub lands: the shape the intermediary offers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Pop:
    call_id: str            # the intermediary's handle (opaque)
    tenant: str
    user_id: str            # the dialled user
    number: str             # the dialled personal number
    ani: str
    ani_name: str
    asked: tuple[str, ...]  # user ids whose workstations get the pop
    lookup: Mapping[str, str]
    expires_at: float       # Unix time
    group: str = ""
