"""The routing drivers the real-Asterisk scenarios and the driver benchmark run over.

Contract. `DRIVERS` is the registry: one `Driver` entry per way a venue asks the bridge
(docs/drivers.md). Adding a driver is one entry here; then every driver-dependent scenario of
tests/integration/test_routing_core.py runs over it (the `driver` fixture in conftest.py,
ids `[fastagi]`, ...) and `python -m bench --only drivers` measures it. An entry says
what the driver needs on both sides:
- the bridge: the `driver = "NAME"` line on the tests' venues (`venue_line`), and any
  section the driver reads (`[ami]` for a driver over the AMI session, `sections` for
  others, e.g. `[ari]`), written by helpers.write_config and by the benchmark;
- Asterisk: the example tenants (examples/bridge.toml, the fragments shipped in
  asterisk-conf/ami-bridge/) rendered with every venue on that driver (`fragments`),
  written into a running sandbox Asterisk and reloaded (`use_driver`, which puts the
  shipped fragments back after), or given to a fresh boot as extra files (the bench).
Personal venues keep their shipped driver: no scenario here calls them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ami_bridge import config as config_mod
from ami_bridge.dialplan.render import OUTPUT_DIR, render_tree, route_request, write_tree
from harness.asterisk import Asterisk, SandboxError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "examples" / "bridge.toml"
# The venue whose rendered route-request line proves that a reload took (the scenarios
# call it and globex-venue; both are rendered alike).
PROBE_VENUE = "acme-venue"


def _no_sections(workdir: Path) -> str:
    return ""


@dataclass(frozen=True)
class Driver:
    """One routing driver, as the integration tests and the benchmark run it."""

    name: str  # the tenant file's `driver` value; also the test id
    # It talks over the bridge's one AMI session: the bridge config needs `[ami]`.
    needs_ami: bool = False
    # Further bridge-config sections it reads (TOML text), given a directory the caller
    # owns (for secret files, say).
    sections: Callable[[Path], str] = _no_sections

    def __str__(self) -> str:
        return self.name

    def venue_line(self) -> str:
        """The line a venue table of the tenant config gets."""
        return f'driver = "{self.name}"'

    def route_line(self) -> str:
        """The application line its venues run to ask the bridge (render.route_request)."""
        return route_request(PROBE_VENUE, self.name)[0]


FASTAGI = Driver("fastagi")


def _ari_sections(workdir: Path) -> str:
    """`[ari]` with the sandbox's ARI user (asterisk-conf/ari.conf) and its password file."""
    secret = workdir / "ari.secret"
    secret.write_text("ami-bridge-ari-secret\n", encoding="utf-8")
    secret.chmod(0o600)
    return f'[ari]\npassword_file = "{secret}"\n'


ARI = Driver("ari", sections=_ari_sections)
# AsyncAGI runs over the bridge's own AMI session: the bridge config gets [ami].
ASYNCAGI = Driver("asyncagi", needs_ami=True)

# The registry. asyncagi: Driver("asyncagi", needs_ami=True); ari: its [ari] section.
DRIVERS: list[Driver] = [FASTAGI, ASYNCAGI, ARI]


def fragments(driver: Driver) -> dict[str, str]:
    """The example tenants' rendered files (relative to Asterisk's config directory)
    with every non-personal venue on `driver`."""
    cfg = config_mod.load(EXAMPLE_CONFIG)
    venues = {name: v if v.personal else dataclasses.replace(v, driver=driver.name)
              for name, v in cfg.venues.items()}
    return render_tree(dataclasses.replace(cfg, venues=venues))


def shipped_fragments(conf_src: Path) -> dict[str, str]:
    """The rendered files the Asterisk was booted with (asterisk-conf/ami-bridge/)."""
    base = conf_src / OUTPUT_DIR
    return {f"{OUTPUT_DIR}/{p.relative_to(base)}": p.read_text(encoding="utf-8")
            for p in sorted(base.rglob("*.conf"))}


def reload_dialplan(asterisk: Asterisk, expected_line: str) -> None:
    """`dialplan reload`, then check with Asterisk itself that the probe venue runs
    `expected_line` (a reload that failed to parse keeps the old dialplan silently)."""
    asterisk.rx("dialplan reload")
    shown = asterisk.rx(f"dialplan show {PROBE_VENUE}")
    if expected_line not in shown:
        raise SandboxError(f"after `dialplan reload`, {PROBE_VENUE} does not run "
                           f"{expected_line!r}; Asterisk shows:\n{shown}")


@contextmanager
def use_driver(asterisk: Asterisk, driver: Driver) -> Iterator[Driver]:
    """The running sandbox Asterisk with the example venues on `driver`; its shipped
    (fastagi) fragments are back, and reloaded, when the block ends."""
    etc = asterisk.instance_dir / "etc"
    shipped = shipped_fragments(asterisk.conf_src)
    write_tree(fragments(driver), etc)
    try:
        reload_dialplan(asterisk, driver.route_line())
        yield driver
    finally:
        write_tree(shipped, etc)
        if asterisk.running:
            reload_dialplan(asterisk, FASTAGI.route_line())
