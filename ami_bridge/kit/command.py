"""`ami-bridge conf init DIR`: its argument parser and its run, kept out of cli.py (which
only adds the parser under `conf` and calls :func:`run`). Exit status as the other
commands: 0 written, 1 refused (a file exists; nothing written), 2 I/O or packaging
error; each file written is printed as `wrote PATH`, every refusal on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ami_bridge import kit


def add_parser(conf_sub: Any) -> None:
    """Add `init` to the `conf` subparsers."""
    init = conf_sub.add_parser(
        "init", help="write the operator's drop-in files (config, tenants, manager users, "
        "include lines, module list, guide) into DIR",
        description="Write DIR/bridge.toml and DIR/tenants.d/ (the example config and "
        "tenants), DIR/agi.secret, DIR/asterisk/ (manager.d/ users, extensions-include.conf, "
        "modules-required.txt) and DIR/README.md (the guide) with docs/. Fresh random "
        "secrets for both AMI logins and the route request. Refuses to overwrite an "
        "existing file unless --force; prints each file written. Exit 0 written, 1 "
        "refused (nothing written), 2 I/O error.")
    init.add_argument("dir", type=Path, metavar="DIR", help="e.g. /etc/ami-bridge")
    init.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    target: Path = args.dir
    try:
        files = kit.kit_files()
        existing = [f for f in files if (target / f.path).exists()]
        if existing and not args.force:
            for item in existing:
                print(f"ami-bridge: {target / item.path} exists", file=sys.stderr)
            print("ami-bridge: conf init refused: nothing written; --force overwrites",
                  file=sys.stderr)
            return 1
        for path in kit.write(target, files, force=args.force):
            print(f"wrote {path}")
    except kit.KitError as exc:
        print(f"ami-bridge: conf init: {exc}", file=sys.stderr)
        return 2
    return 0
