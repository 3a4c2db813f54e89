"""A harness process that dies outright leaves nothing running (issue: security, faults).

A holder process starts the sandbox Asterisk, a SIPp UAS and the bridge with its VTS
processes and is then SIGKILLed: the kernel kills its direct children (parent-death
signal), the VTS processes follow their bridge, and whatever could still be left is
reaped when the next run takes the sandbox lock, so that run starts on free ports. The
reaping is also tested alone, on a tagged process whose owner is gone. This module uses
no module-wide Asterisk: the holder needs the sandbox lock for itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.asterisk import ASTERISK_SIP, DEFAULT_CONF_SRC, Asterisk, acquire_lock, sandbox_root
from harness.procs import alive, owner_token, tagged, udp_bound

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
# SIGKILL to gone: the kernel acts at once; the margin is for a loaded machine.
GONE_WITHIN_S = 10.0


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after `timeout_s` (polling; returns early once all are gone)."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def stop(process: subprocess.Popen[str]) -> None:
    """SIGKILL, reap, close its pipe (unread: a child of it may hold the write end)."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def test_sigkilled_holder_leaves_nothing_and_the_next_run_starts(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.harness_holder", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # bounded by the holder's own lock timeout
        assert line, f"holder exited ({holder.wait()}) before starting everything"
        pids = json.loads(line)
        token = owner_token(holder.pid)
        direct = [pids["asterisk"], pids["sipp"], pids["bridge"]]
        assert len(pids["vts"]) == 2
        assert set(tagged(token)) >= {*direct, *pids["vts"]}
    finally:
        stop(holder)
    assert wait_gone(direct, GONE_WITHIN_S) == []  # the parent-death signal
    # The next run takes the lock (reaping leftovers) and finds SIP 5060 free.
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-harness-cleanup") as asterisk:
        assert asterisk.channel_count() == 0
        assert wait_gone(pids["vts"], GONE_WITHIN_S) == []
        assert tagged(token) == []
    assert not udp_bound(int(ASTERISK_SIP.rsplit(":", 1)[1]))


def test_lock_reaps_processes_of_a_dead_holder() -> None:
    # An owner that tags a child the plain way (no parent-death signal), then dies.
    script = ("import os, subprocess, time; from harness.procs import OWNER_ENV, owner_token; "
              "child = subprocess.Popen(['sleep', '600'], stdout=subprocess.DEVNULL, "
              "env={**os.environ, OWNER_ENV: owner_token()}); "
              "print(child.pid, flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout is not None
        leftover = int(owner.stdout.readline())
    finally:
        stop(owner)
    try:
        assert alive(leftover)  # the kernel did not kill it: nothing asked it to
        lock = acquire_lock(sandbox_root())
        lock.close()
        assert wait_gone([leftover], GONE_WITHIN_S) == []
    finally:
        if alive(leftover):
            os.kill(leftover, signal.SIGKILL)
