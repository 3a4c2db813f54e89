"""`make demo`: `ami-bridge calltest` against the sandbox Asterisk and the bridge.

Run from the repository (`python -m harness.demo`; not installed with the product).
Starts the sandbox Asterisk with asterisk-conf/ (the same files an operator drops in),
then follows the operator's steps of asterisk-conf/README.md against it: render the
example tenants' fragments into its config directory, check them, start the bridge
with examples/bridge.toml, apply (reload over AMI, verify with ShowDialPlan). Then
`ami-bridge calltest` derives a call per rule of each venue from the tenant files,
places them with SIPp (each case 5 times), follows them over AMI while the sandbox
phones ring, cancels them, and prints expected against actual destination with latency
percentiles (docs/calltest.md). With the bridge up it also shows the personal router,
as a user would use it from a terminal: the operator creates alice (acme, personal
number 2101, desk phone 1011) with `ami-bridge users create`, alice logs in and sets a
rule with `ami-bridge rules set` (forward to desk 1012), a call to 2101 rings desk 1012,
and `ami-bridge trace` says why. Last, calltest runs again with the bridge stopped:
every call now takes its venue's dialplan fallback (the operator), so calltest reports
the rules' other destinations as mismatches, as it would in an operator's CI. Exits 0
when the first calltest matched everything, the personal call rang desk 1012, the
bridge-down calltest found every call at the operator, and no channel was left.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from ami_bridge.api.client import Client
from harness.asterisk import REPO_ROOT as ROOT
from harness.asterisk import Asterisk, SandboxError, sandbox_ready
from harness.bridge import BridgeError, BridgeProcess
from harness.calltest import ringing_phones, run_calltest
from harness.sipp import SippUas, start_uac

# How many times the calltest places each case: enough calls for latency percentiles.
REPEAT = 5
RATE = 10


def calltest(title: str, config: Path) -> tuple[int, list[list[str]]]:
    """Run `ami-bridge calltest` with the sandbox phones ringing; its exit status and
    its result rows (the table's cells)."""
    print(f"demo: $ ami-bridge calltest ({title})")
    with ringing_phones():
        result = run_calltest(config, extra=["--repeat", str(REPEAT), "--rate", str(RATE)])
    for line in result.output.splitlines():
        print(f"demo:     {line}")
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.output.splitlines()
            if line.startswith(("acme ", "globex "))]
    return result.returncode, rows


def demo_config(tmp: Path, etc: Path) -> Path:
    """examples/bridge.toml, pointed at the example tenants and this Asterisk's config."""
    text = (ROOT / "examples" / "bridge.toml").read_text(encoding="utf-8")
    text = text.replace('tenants_dir = "tenants.d"',
                        f'tenants_dir = "{ROOT / "examples" / "tenants.d"}"')
    text = text.replace('# asterisk_conf_dir = "/etc/asterisk"', f'asterisk_conf_dir = "{etc}"')
    text = text.replace('control_socket = "/run/ami-bridge/control.sock"',
                        f'control_socket = "{tmp / "control.sock"}"')
    text = text.replace('path = "/var/lib/ami-bridge/personal.sqlite3"',
                        f'path = "{tmp / "personal.sqlite3"}"')
    path = tmp / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def step(title: str, argv: list[str]) -> None:
    print(f"demo: $ {title}")
    done = subprocess.run([sys.executable, "-m", "ami_bridge", *argv], capture_output=True,
                          text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"demo:     {line}")
    if done.returncode != 0:
        raise BridgeError(f"{title} failed with exit status {done.returncode}")


DESKS = {"1011": 5075, "1012": 5076}  # acme's desk phones (asterisk-conf/pjsip.conf)
PERSONAL_RULES = {"rules": [{"name": "to-desk2", "action": "forward", "on": "always",
                             "target": "extension:1012"}]}


def with_api(config: Path, tmp: Path) -> str:
    """Serve the personal router's HTTP API (a free loopback port, an operator token)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = tmp / "operator.token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f'\n[api]\nlisten = "127.0.0.1:{port}"\n'
                     f'operator_token_file = "{token}"\n')
    return f"http://127.0.0.1:{port}"


def personal_phase(api: str, tmp: Path) -> int:
    """Alice's own rule decides her next call; returns the number of failures."""
    password, rules = tmp / "alice.password", tmp / "alice-rules.json"
    password.write_text("demo-password-alice\n")
    rules.write_text(json.dumps(PERSONAL_RULES))
    operator = ["--api", api, "--operator-token-file", str(tmp / "operator.token")]
    as_alice = ["--api", api, "--token-file", str(tmp / "alice.token")]
    step("ami-bridge users create --tenant acme alice --number 2101",
         ["users", "create", "--tenant", "acme", "alice", "--number", "2101",
          "--name", "Alice", "--password-file", str(password), *operator])
    step("ami-bridge login --tenant acme --user alice",
         ["login", "--tenant", "acme", "--user", "alice", "--password-file", str(password),
          *as_alice])
    step("ami-bridge rules set --file alice-rules.json (forward to desk 1012)",
         ["rules", "set", "--file", str(rules), *as_alice])
    with ExitStack() as stack:
        desks = {ext: stack.enter_context(SippUas(port, f"desk{ext}"))
                 for ext, port in DESKS.items()}
        stats = start_uac(from_user="acme-caller", dnis="2101", calls=1, rate=1,
                          hold_ms=100).wait()
        arrived = {ext: u.stop().successful for ext, u in desks.items()}
    token = (tmp / "alice.token").read_text().strip()
    calls: list[dict[str, str]] = []
    for _ in range(50):  # the route trace is written in batches (within 0.2 s)
        calls = Client(api, token).call("GET", "/api/v1/me/calls")["calls"]
        if calls:
            break
        time.sleep(0.1)
    if calls:
        step("ami-bridge trace UNIQUEID", ["trace", calls[0]["uniqueid"], *as_alice])
    print(f"demo:     call to 2101: desk 1012 rang {arrived['1012']}, desk 1011 rang "
          f"{arrived['1011']} (alice's own rule 'to-desk2')")
    return stats.failed + (0 if arrived == {"1011": 0, "1012": 1} else 1)


def operator_steps(config: Path, etc: Path) -> None:
    step("ami-bridge conf render", ["conf", "render", "--config", str(config), "--out", str(etc)])
    step("ami-bridge conf check", ["conf", "check", "--config", str(config)])


def main() -> int:
    if not sandbox_ready():
        print("demo: the sandbox is not provisioned; run `make demo` (it provisions it)",
              file=sys.stderr)
        return 2
    print("demo: starting Asterisk 22 (sandbox), the bridge and the two example tenants...")
    try:
        with Asterisk(conf_src=ROOT / "asterisk-conf", name="demo") as asterisk, \
                tempfile.TemporaryDirectory() as tmp:
            config = demo_config(Path(tmp), asterisk.instance_dir / "etc")
            api = with_api(config, Path(tmp))
            operator_steps(config, asterisk.instance_dir / "etc")
            bridge = BridgeProcess(config, log_path=Path(tmp) / "bridge.log")
            with bridge:
                step("ami-bridge ctl apply", ["ctl", "apply", "--config", str(config)])
                up_status, _ = calltest("bridge up", config)
                print("demo: a user's own rules (the personal router)...")
                personal_failed = personal_phase(api, Path(tmp))
            down_status, down_rows = calltest("bridge stopped: the dialplan fallback", config)
            leftover = asterisk.channel_count()
    except (SandboxError, BridgeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    # With the bridge down every call must still ring: at its venue's operator.
    fallback = bool(down_rows) and all(row[4].endswith("-operator") for row in down_rows)
    print()
    print(f"demo: bridge up: calltest exit {up_status} (0: every call where its rule says); "
          f"personal call to 2101 {'rang desk 1012' if not personal_failed else 'FAILED'}; "
          f"bridge down: calltest exit {down_status}, every call at the operator: "
          f"{'yes' if fallback else 'NO'}; {leftover} channels left in Asterisk.")
    return 0 if up_status == 0 and not personal_failed and down_status == 1 and fallback \
        and leftover == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
