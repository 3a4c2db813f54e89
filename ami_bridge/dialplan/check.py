"""`ami-bridge conf check`: lint dialplan and queues files, print CI lines, exit code.

`run_check` validates its arguments, runs `lint.check` (files named `queues.conf` are
read as queues; with `config_dir`, its `queues.conf` is read too; `allow` and
`agi_addresses` pass through, by default nothing is allowed and the bridge listens on
127.0.0.1:4573; `bridge_agi`, known from a bridge config only, has `[globals]
AB_AGI_URL` checked against the listener, V503), and writes one line per finding
(`file:line: code message`, sorted by file then line) and then a one-line summary to
`out`. Exit codes: 0 clean, 1 findings, 2 a usage or I/O error (no files, no tenants,
a bad tenant name, an owner naming an unknown tenant, a bad `shared`/`operator` pattern
or one of `ownership.conflicts`, a file that cannot be read); an
error is written as `conf check: error: ...` and no findings are printed. A missing
`#include`d file is a finding (DP101), since Asterisk refuses such a dialplan; a
missing or unreadable file on the command line is a usage error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TextIO

from ami_bridge.agi.variables import DEFAULT_STASIS_APP
from ami_bridge.dialplan.allow import Allowance
from ami_bridge.dialplan.escapes import DEFAULT_AGI_ADDRESSES
from ami_bridge.dialplan.globs import PATTERN_RE
from ami_bridge.dialplan.lint import BridgeAgi, check
from ami_bridge.dialplan.ownership import conflicts
from ami_bridge.dialplan.parser import DialplanReadError, Source

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # fullmatch
_NO_OWNERS: Mapping[str, str] = MappingProxyType({})
_NO_FILES: Mapping[Path, str] = MappingProxyType({})


def run_check(paths: Sequence[Path], *, tenants: Sequence[str],
              owners: Mapping[str, str] = _NO_OWNERS, shared: frozenset[str] = frozenset(),
              file_owners: Mapping[Path, str] = _NO_FILES, out: TextIO,
              source: Source | None = None, config_dir: Path | None = None,
              allow: Iterable[Allowance] = (),
              agi_addresses: frozenset[tuple[str, int]] = DEFAULT_AGI_ADDRESSES,
              operator: frozenset[str] = frozenset(),
              bridge_agi: BridgeAgi | None = None,
              stasis_app: str = DEFAULT_STASIS_APP) -> int:
    """Lint `paths` for `tenants`; print findings and a summary to `out`; exit code."""
    allow = tuple(allow)
    problem = _usage_problem(paths, tenants, owners, file_owners) or next(
        (f"allow: {a.code} {a.subject} is for {a.tenant!r}, which is not a known tenant"
         for a in allow if a.tenant is not None and a.tenant not in tenants), "") or next(
        (f"{what} context {name!r} is not a context name or pattern (letters, digits, "
         "'_', '-' and the fnmatch specials * ? [ ] !)"
         for what, names in (("shared", shared), ("operator", operator))
         for name in sorted(names) if not PATTERN_RE.fullmatch(name)), "") or next(
        iter(conflicts(tenants=set(tenants), operator=operator, shared=shared,
                       owners=owners)), "")
    if problem:
        out.write(f"conf check: error: {problem}\n")
        return EXIT_ERROR
    try:
        found = check(paths, owners=owners, shared=shared, tenants=tenants,
                      file_owners=file_owners or None, source=source, config_dir=config_dir,
                      allow=allow, agi_addresses=agi_addresses, operator=operator,
                      bridge_agi=bridge_agi, stasis_app=stasis_app)
    except DialplanReadError as exc:
        out.write(f"conf check: error: {exc}\n")
        return EXIT_ERROR
    for finding in found:
        out.write(f"{finding}\n")
    files = len({f.file for f in found})
    names = ", ".join(sorted(tenants))
    if found:
        out.write(f"conf check: {len(found)} finding{'s' if len(found) != 1 else ''} in "
                  f"{files} file{'s' if files != 1 else ''} (tenants: {names})\n")
        return EXIT_FINDINGS
    given = f"{len(paths)} file{'s' if len(paths) != 1 else ''} given"
    out.write(f"conf check: clean ({given}, with their #includes; tenants: {names})\n")
    return EXIT_CLEAN


def _usage_problem(paths: Sequence[Path], tenants: Sequence[str],
                   owners: Mapping[str, str], file_owners: Mapping[Path, str]) -> str:
    if not paths:
        return "no dialplan files given"
    if not tenants:
        return "no tenants given: every context would be unowned"
    for name in tenants:
        if not _TENANT_RE.fullmatch(name):
            return f"bad tenant name {name!r}"
    for what, mapping in (("owners", owners), ("file_owners", file_owners)):
        for key, tenant in mapping.items():
            if tenant not in tenants:
                return f"{what}: {key} belongs to {tenant!r}, which is not a known tenant"
    return ""
