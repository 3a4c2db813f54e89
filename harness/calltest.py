"""`ami-bridge calltest` against the sandbox: SIPp inside the root, phones that ring.

Contract. The product runs SIPp as a command line in a working directory it fills
(ami_bridge/calltest/run.py); the sandbox's SIPp lives inside the chroot, so
:func:`sandbox_sipp` writes a small wrapper that runs it there, in the same directory
seen from inside (the working directory must lie under the root's run directory, which
:func:`run_calltest` arranges). :func:`ringing_phones` starts a SIPp UAS that rings and
never answers (tests/sipp/uas_noanswer.xml) on every phone of asterisk-conf/pjsip.conf,
so a test call rings its destination until calltest cancels it. :func:`run_calltest`
runs the command as a harness child (it and its SIPp die with the harness).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.asterisk import INSIDE_RUN_DIR, fresh_dir, require_ready, sandbox_root
from harness.procs import spawn
from harness.sipp import SIPP_BIN, SippUas

# Every phone of asterisk-conf/pjsip.conf (its static AOR contacts).
PHONES = {"acme-agent": 5071, "globex-agent": 5072, "acme-operator": 5073,
          "globex-operator": 5074, "acme-desk1": 5075, "acme-desk2": 5076,
          "acme-desk3": 5077}
# How each example venue is entered: the tenant's trunk (identify_by=username), caller
# numbers in P-Asserted-Identity (the trunks trust it: trust_id_inbound).
SANDBOX_ENTRIES = ("acme-venue=acme-trunk", "globex-venue=globex-trunk")
# A calltest of a handful of calls takes seconds; this bounds a stuck one.
CALLTEST_TIMEOUT_S = 180.0

_WRAPPER = """#!/bin/sh
# Written by harness/calltest.py: SIPp inside the sandbox root, in the directory that is
# $PWD seen from inside (calltest runs SIPp with relative file names).
root='{root}'
case "$PWD" in
  "$root"/*) inside="${{PWD#"$root"}}" ;;
  *) echo "sipp-in-sandbox: $PWD is not under $root" >&2; exit 2 ;;
esac
exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec {sipp} "$@"' sipp "$inside" "$@"
"""


@dataclass(frozen=True)
class CalltestResult:
    returncode: int
    output: str


def sandbox_sipp(root: Path | None = None) -> tuple[Path, Path]:
    """(wrapper, working directory): a `--sipp` command and a `--workdir` for it."""
    root = (root or sandbox_root()).resolve()
    require_ready(root)
    base = root / INSIDE_RUN_DIR.lstrip("/") / "calltest"
    fresh_dir(base)
    wrapper = base / "sipp-in-sandbox"
    wrapper.write_text(_WRAPPER.format(root=root, sipp=SIPP_BIN), encoding="utf-8")
    wrapper.chmod(0o755)
    workdir = base / "work"
    workdir.mkdir()
    return wrapper, workdir


@contextmanager
def ringing_phones() -> Iterator[dict[str, SippUas]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(SippUas(port, name, scenario="uas_noanswer.xml"))
               for name, port in PHONES.items()}


def run_calltest(config: Path, *, entries: Sequence[str] = SANDBOX_ENTRIES,
                 extra: Sequence[str] = ()) -> CalltestResult:
    """`ami-bridge calltest` with the sandbox's SIPp and entries; its exit status and
    output (stdout and stderr)."""
    wrapper, workdir = sandbox_sipp()
    argv = [sys.executable, "-m", "ami_bridge", "calltest", "--config", str(config),
            "--sip", "127.0.0.1:5060", "--sipp", str(wrapper), "--workdir", str(workdir),
            "--pai", *(a for e in entries for a in ("--entry", e)), *extra]
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=CALLTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return CalltestResult(-1, out.decode(errors="replace") + "\n(timed out, killed)")
    return CalltestResult(proc.returncode, out.decode(errors="replace"))
