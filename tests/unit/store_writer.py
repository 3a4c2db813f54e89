"""A child process for the crash tests of tests/unit/test_store.py: writes portions until
killed.

``python -m tests.unit.store_writer sqlite|postgresql WHERE TENANT USER...`` opens the
store and writes, round robin over the users, version after version of a self-checking
body (:func:`body_for`: its content is derived from the user and the version, and it
spans several SQLite pages), printing ``USER VERSION`` after each write returned (so the
parent knows what was committed). It stops by itself after :data:`MAX_WRITES`, so a parent
that failed to kill it does not leave it running for long.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from ami_bridge.personal.model import Store

MAX_WRITES = 5000


def body_for(user_id: str, version: int) -> dict[str, Any]:
    """A portion body whose every part names `version`: a torn or mixed write shows."""
    digits = str(version)
    return {
        "rules": [{"name": f"v{digits} r{i}", "action": "voicemail",
                   "when": {"callers": [f"0{digits}{i}*"] * 5}} for i in range(20)],
        "vip": [digits] * (1 + version % 7),
        "blocked": [f"{user_id}-{digits}"],
        "saved": ["x" * 64] * 20,
    }


def open_store(kind: str, where: str) -> Store:
    if kind == "sqlite":
        from ami_bridge.personal.sqlite import SqliteStore

        return SqliteStore(Path(where))
    from ami_bridge.personal.postgres import PostgresStore

    return PostgresStore(where)


async def write_forever(kind: str, where: str, tenant: str, users: list[str]) -> None:
    store = open_store(kind, where)
    await store.open()
    versions = {uid: (await store.get_portion(tenant, uid)).version for uid in users}
    for n in range(MAX_WRITES):
        uid = users[n % len(users)]
        portion = await store.put_portion(tenant, uid, body_for(uid, versions[uid] + 1),
                                          versions[uid])
        versions[uid] = portion.version
        sys.stdout.write(f"{uid} {portion.version}\n")
        sys.stdout.flush()
    await store.close()


if __name__ == "__main__":
    asyncio.run(write_forever(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
