"""The operator's kit: the drop-in files `ami-bridge conf init DIR` writes out.

Contract. The wheel ships, under `ami_bridge/kit/files/`, the repository's own files
(symlinks at build time, so there is ONE copy: examples/bridge.toml, examples/tenants.d/,
asterisk-conf/manager.d/, asterisk-conf/README.md as the guide, docs/) plus
`asterisk/modules-required.txt`, whose only home is here. :func:`kit_files` returns what
`conf init` writes, as frozen :class:`KitFile` values: the shipped files with the
sandbox's test-grade AMI secrets replaced by fresh random ones (the same secret in the
manager user and in bridge.toml), a fresh route-request secret (`agi.secret`, named by
`[bridge] agi_secret_file` in bridge.toml) and `asterisk/extensions-include.conf`, the
lines an operator appends to extensions.conf (`[globals]` AB_AGI_URL with that secret,
and the include of the rendered fragments). :func:`write` refuses to overwrite any
existing file unless `force` (checked for all files before the first is written) and
returns the paths written. Randomness comes from the `token` argument, so tests pass
their own. The command line (`conf init`) is ami_bridge.kit.command.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

# The sandbox's test-grade AMI secrets (asterisk-conf/manager.d/*.conf and
# examples/bridge.toml): never written out as they are. Neither contains the other, so
# replacing one never touches the other.
SANDBOX_AMI_SECRETS = ("ami-bridge-secret", "ami-bridge-reload-secret")
# secrets.token_urlsafe(24): 32 characters, 192 bits; within config.AGI_SECRET_RE's
# 22-128 characters of A-Z a-z 0-9 _ - (an AMI secret takes the same alphabet).
SECRET_BYTES = 24
# Mode of files holding a secret: the bridge refuses a readable agi.secret
# (validation.secret_file); bridge.toml holds the AMI secrets inline.
SECRET_MODE = 0o600
# The manager users hold secrets too but Asterisk (its own user on Debian) reads them:
# group-readable, for `chgrp asterisk` after copying (asterisk-conf/README.md, step 4).
MANAGER_MODE = 0o640
PLAIN_MODE = 0o644
# What bridge.toml names the route-request secret file (relative to the config).
AGI_SECRET_FILE = "agi.secret"
INCLUDE_SNIPPET = "asterisk/extensions-include.conf"
# The line of examples/bridge.toml after which `agi_secret_file` goes.
_AGI_LISTEN_KEY = "agi_listen"


class KitError(Exception):
    """The shipped kit is not what `conf init` expects (a packaging fault), or DIR is
    not writable as asked."""


@dataclass(frozen=True)
class KitFile:
    """One file `conf init` writes: its path relative to DIR, its text, its mode."""

    path: str
    text: str
    mode: int


def shipped() -> dict[str, str]:
    """The kit's files as shipped: relative path -> text (no secrets replaced)."""
    root = resources.files(__name__) / "files"
    found = dict(_walk(root, ""))
    if not found:
        raise KitError(f"no kit files under {root}: the package was built without its "
                       "data (pyproject.toml [tool.setuptools.package-data])")
    return found


def _walk(node: Traversable, prefix: str) -> Iterator[tuple[str, str]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            if rel != "docs/img":  # the docs' screenshots: not needed to follow the guide
                yield from _walk(child, rel + "/")
        elif not child.name.startswith(".") and child.name != "__pycache__":
            yield rel, child.read_text(encoding="utf-8")


def kit_files(token: Callable[[int], str] = secrets.token_urlsafe) -> list[KitFile]:
    """What `conf init` writes, with fresh secrets from `token` (token_urlsafe's shape)."""
    files = shipped()
    ami = {old: token(SECRET_BYTES) for old in SANDBOX_AMI_SECRETS}
    agi_secret = token(SECRET_BYTES)
    for old in SANDBOX_AMI_SECRETS:
        holders = [p for p, text in files.items() if old in text]
        if "bridge.toml" not in holders or not any(p.startswith("asterisk/manager.d/")
                                                   for p in holders):
            raise KitError(f"the sandbox secret {old!r} is no longer in bridge.toml and "
                           f"asterisk/manager.d/ (found in {holders}): conf init would "
                           "ship a config whose AMI login fails; update SANDBOX_AMI_SECRETS")
    url = _agi_url(files["bridge.toml"], agi_secret)
    out: list[KitFile] = []
    for path, text in files.items():
        for old, new in ami.items():
            text = text.replace(old, new)
        if path == "bridge.toml":
            out.append(KitFile(path, _with_agi_secret_file(text), SECRET_MODE))
        elif path.startswith("asterisk/manager.d/"):
            out.append(KitFile(path, text, MANAGER_MODE))
        else:
            out.append(KitFile(path, text, PLAIN_MODE))
    out.append(KitFile(AGI_SECRET_FILE, agi_secret + "\n", SECRET_MODE))
    out.append(KitFile(INCLUDE_SNIPPET, extensions_include(url), SECRET_MODE))
    return sorted(out, key=lambda f: f.path)


def _with_agi_secret_file(text: str) -> str:
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.split("=")[0].strip() == _AGI_LISTEN_KEY:
            lines.insert(i + 1, f'agi_secret_file = "{AGI_SECRET_FILE}"   # written by '
                         "`ami-bridge conf init`; the venues' AB_AGI_URL ends in it\n")
            return "".join(lines)
    raise KitError(f"bridge.toml has no {_AGI_LISTEN_KEY} line to put agi_secret_file after")


def _agi_url(bridge_toml: str, agi_secret: str) -> str:
    """The FastAGI URL of bridge.toml's `[bridge] agi_listen`, with the secret as path."""
    try:
        listen = tomllib.loads(bridge_toml)["bridge"][_AGI_LISTEN_KEY]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise KitError(f"the shipped bridge.toml has no [bridge] {_AGI_LISTEN_KEY}: "
                       f"{exc}") from None
    return f"agi://{listen}/{agi_secret}"


def extensions_include(url: str) -> str:
    """The lines an operator appends to extensions.conf (asterisk-conf/README.md, 3)."""
    return (
        "; ami-bridge: append to /etc/asterisk/extensions.conf (written by `ami-bridge "
        "conf init`).\n"
        "; AB_AGI_URL is where the venues ask the bridge for a route; its path is the\n"
        "; route-request secret ([bridge] agi_secret_file): keep extensions.conf readable\n"
        "; by Asterisk only. A second [globals] section merges with yours.\n"
        "[globals]\n"
        f"AB_AGI_URL={url}\n"
        "; More bridges (docs/scale-out.md): the others, nearest first, each with its secret.\n"
        ";AB_AGI_URL_2=agi://OTHER-BRIDGE:4573/SECRET\n"
        "\n"
        "; The tenants' rendered fragments (`ami-bridge conf render --out /etc/asterisk`).\n"
        '#include "ami-bridge/extensions.conf"\n'
    )


def write(target: Path, files: Sequence[KitFile], *, force: bool = False) -> list[Path]:
    """Write `files` under `target`; refuse (KitError, nothing written) when one exists
    and not `force`. Returns the paths written, in order."""
    existing = [target / f.path for f in files if (target / f.path).exists()]
    if existing and not force:
        raise KitError(f"{len(existing)} file{'s' if len(existing) != 1 else ''} already "
                       f"exist{'s' if len(existing) == 1 else ''} under {target} (first: "
                       f"{existing[0]}); nothing written; --force overwrites them")
    written = []
    for item in files:
        path = target / item.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Created with its mode, so a secret is never readable by others, not even
            # for a moment; fchmod for a file that existed (--force) with a looser one.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, item.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                os.fchmod(stream.fileno(), item.mode)
                stream.write(item.text)
        except OSError as exc:
            raise KitError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written
