"""The tenant files of a `tenants_dir` as one set: read them all, replace them all, put
them back.

A cluster apply ships the coordinator's set (tenant name -> text of `NAME/tenant.toml`)
to every node; a node's commit makes its own `tenants_dir` hold exactly that set
(`replace`: new and changed files written atomically, the `tenant.toml` of a tenant the
set lacks removed, its directory kept) and keeps the old texts, which `restore` writes
back if the cluster rolls back. Only `tenant.toml` is part of the set: anything else in
a tenant's directory is the node's own. Names are checked before any path is built.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from ami_bridge.namespace import TENANT_NAME_RE

TENANT_FILE = "tenant.toml"  # as ami_bridge.config reads it

# tenant name -> old text (None: the file did not exist)
Backup = Mapping[str, str | None]


def read_all(directory: Path) -> dict[str, str]:
    """Every tenant file of `directory` (hidden entries skipped, as the config loader does)."""
    found = {}
    for entry in sorted(directory.iterdir()):
        path = entry / TENANT_FILE
        if not entry.name.startswith(".") and path.is_file():
            found[entry.name] = path.read_text(encoding="utf-8")
    return found


def bad_names(names: list[str]) -> list[str]:
    """The names that are not tenant names (and so must never become a path)."""
    return [name for name in names if not TENANT_NAME_RE.fullmatch(name)]


def replace(directory: Path, texts: Mapping[str, str]) -> Backup:
    """Make `directory` hold exactly `texts`; returns the old texts for `restore`."""
    if bad := bad_names(list(texts)):
        raise ValueError(f"not tenant names: {', '.join(repr(n) for n in bad)}")
    old = read_all(directory)
    backup: dict[str, str | None] = {name: old.get(name) for name in sorted(set(old) | set(texts))}
    try:
        for name, text in sorted(texts.items()):
            if old.get(name) != text:
                _write(directory / name, text)
        for name in sorted(set(old) - set(texts)):
            (directory / name / TENANT_FILE).unlink()
    except BaseException:
        restore(directory, backup)
        raise
    return backup


def restore(directory: Path, backup: Backup) -> None:
    """Write the old texts back; a tenant that did not exist loses its file again."""
    for name, text in sorted(backup.items()):
        path = directory / name / TENANT_FILE
        if text is not None:
            with contextlib.suppress(OSError):
                if path.read_text(encoding="utf-8") == text:
                    continue
            _write(directory / name, text)
        elif path.exists():
            path.unlink()
            with contextlib.suppress(OSError):
                (directory / name).rmdir()  # only if empty: it was made for the file


def _write(tenant_dir: Path, text: str) -> None:
    """Atomically: a reload that reads the directory meanwhile sees old or new, not half."""
    tenant_dir.mkdir(exist_ok=True)
    temporary = tenant_dir / f".{TENANT_FILE}.cluster-apply"
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, tenant_dir / TENANT_FILE)
