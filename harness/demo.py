"""`make demo`: route a short SIPp call mix through the sandbox Asterisk and the bridge.

Run from the repository (`python -m harness.demo`; not installed with the product).
Starts the sandbox Asterisk with asterisk-conf/ (the same files an operator drops in),
then follows the operator's steps of asterisk-conf/README.md against it: render the
example tenants' fragments into its config directory, check them, start the bridge
with examples/bridge.toml, apply (reload over AMI, verify with ShowDialPlan). Then it
places calls into both venues with the bridge up, then with the bridge stopped (the
dialplan's AGISTATUS fallback), and prints per tenant where the calls arrived, as
counted by the SIPp UASes. With the bridge up it also shows the personal router, as a
user would use it from a terminal: the operator creates alice (acme, personal number
2101, desk phone 1011) with `ami-bridge users create`, alice logs in and sets a rule
with `ami-bridge rules set` (forward to desk 1012), a call to 2101 rings desk 1012, and
`ami-bridge trace` says why. Exits 0 when every call completed.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ami_bridge.api.client import Client
from harness.asterisk import REPO_ROOT as ROOT
from harness.asterisk import Asterisk, SandboxError, sandbox_ready
from harness.bridge import BridgeError, BridgeProcess
from harness.sipp import SippUas, start_uac

DESTINATIONS = {"acme-agent": 5071, "globex-agent": 5072,
                "acme-operator": 5073, "globex-operator": 5074}


@dataclass(frozen=True)
class Batch:
    tenant: str
    dnis: str
    calls: int
    note: str


MIX = [
    Batch("acme", "100", 10, "rule 'sales' (DNIS 1…) -> 1001"),
    Batch("acme", "200", 4, "no rule matches -> default"),
    Batch("globex", "100", 10, "rule 'support' -> 2001"),
]
DOWN_MIX = [Batch("acme", "100", 3, "bridge down"), Batch("globex", "100", 3, "bridge down")]


def run_phase(title: str, batches: list[Batch]) -> tuple[list[list[str]], int]:
    rows, failed = [], 0
    for batch in batches:
        with ExitStack() as stack:
            uas = {name: stack.enter_context(SippUas(port, name))
                   for name, port in DESTINATIONS.items()}
            stats = start_uac(from_user=f"{batch.tenant}-trunk", dnis=batch.dnis,
                              calls=batch.calls, rate=10, hold_ms=100).wait()
            arrived = {name: u.stop().successful for name, u in uas.items()}
        failed += stats.failed
        rows.append([title, batch.tenant, batch.dnis, str(batch.calls), str(stats.successful),
                     str(stats.failed), str(arrived[f"{batch.tenant}-agent"]),
                     str(arrived[f"{batch.tenant}-operator"]),
                     str(sum(v for k, v in arrived.items() if not k.startswith(batch.tenant))),
                     batch.note])
    return rows, failed


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


def personal_phase(api: str, tmp: Path) -> tuple[list[list[str]], int]:
    """Alice's own rule decides her next call; returns the table row and failures."""
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
    row = ["up", "acme", "2101", "1", str(stats.successful), str(stats.failed),
           f"desk 1012: {arrived['1012']}", f"desk 1011: {arrived['1011']}", "0",
           "alice's own rule 'to-desk2'"]
    return [row], stats.failed + (0 if arrived == {"1011": 0, "1012": 1} else 1)


def operator_steps(config: Path, etc: Path) -> None:
    step("ami-bridge conf render", ["conf", "render", "--config", str(config), "--out", str(etc)])
    step("ami-bridge conf check", ["conf", "check", "--config", str(config)])


def print_table(rows: list[list[str]]) -> None:
    header = ["bridge", "tenant", "DNIS", "calls", "ok", "failed", "agent", "operator",
              "other tenant", "why"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> int:
    if not sandbox_ready():
        print("demo: the sandbox is not provisioned; run `make demo` (it provisions it)",
              file=sys.stderr)
        return 2
    print("demo: starting Asterisk 22 (sandbox), the bridge and the two example tenants...")
    rows: list[list[str]] = []
    failed = 0
    try:
        with Asterisk(conf_src=ROOT / "asterisk-conf", name="demo") as asterisk, \
                tempfile.TemporaryDirectory() as tmp:
            config = demo_config(Path(tmp), asterisk.instance_dir / "etc")
            api = with_api(config, Path(tmp))
            operator_steps(config, asterisk.instance_dir / "etc")
            bridge = BridgeProcess(config, log_path=Path(tmp) / "bridge.log")
            with bridge:
                step("ami-bridge ctl apply", ["ctl", "apply", "--config", str(config)])
                print("demo: placing calls with the bridge up...")
                up_rows, up_failed = run_phase("up", MIX)
                print("demo: a user's own rules (the personal router)...")
                personal_rows, personal_failed = personal_phase(api, Path(tmp))
                up_rows, up_failed = up_rows + personal_rows, up_failed + personal_failed
            print("demo: placing calls with the bridge stopped...")
            down_rows, down_failed = run_phase("down", DOWN_MIX)
            rows, failed = up_rows + down_rows, up_failed + down_failed
            leftover = asterisk.channel_count()
    except (SandboxError, BridgeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print()
    print_table(rows)
    print()
    print(f"{sum(int(r[3]) for r in rows)} calls, {failed} failed; "
          f"{leftover} channels left in Asterisk.")
    return 0 if failed == 0 and leftover == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
