"""The fork server's wire format, which VTS it serves, and how it is started (pure)."""

from __future__ import annotations

import json

import pytest

from ami_bridge.config import VtsConfig
from ami_bridge.supervision import confine
from ami_bridge.supervision.forkclient import ForkServer
from ami_bridge.supervision.forkserver import (
    MAX_PACKET,
    Exited,
    Failed,
    Ready,
    Spawn,
    Spawned,
    WireError,
    decode_reply,
    decode_request,
    encode,
)

SPAWN = Spawn(id=7, name="acme", module="ami_bridge.tenants.worker", log_level="info",
              uid=400000, gid=400001)


@pytest.mark.parametrize("reply", [Ready(pid=2, modules=("ami_bridge.tenants.worker",)),
                                   Spawned(id=7, pid=12), Failed(id=7, error="no"),
                                   Exited(id=7, returncode=-9)])
def test_replies_round_trip(reply: object) -> None:
    assert decode_reply(encode(reply)) == reply  # type: ignore[arg-type]


def test_a_spawn_request_round_trips_and_is_not_a_reply() -> None:
    assert decode_request(encode(SPAWN)) == SPAWN
    unconfined = Spawn(id=1, name="a", module="m", log_level="debug", uid=None, gid=None)
    assert decode_request(encode(unconfined)) == unconfined
    with pytest.raises(WireError, match="spawn request where a reply"):
        decode_reply(encode(SPAWN))
    with pytest.raises(WireError, match="expected a spawn request"):
        decode_request(encode(Exited(id=1, returncode=0)))


@pytest.mark.parametrize(("packet", "why"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1]", "no known type"),
    (b'{"type": "fork"}', "no known type"),
    (b'{"type": "exited", "id": 1}', "exited packet"),
    (b'{"type": "exited", "id": 1, "returncode": 0, "extra": 1}', "exited packet"),
    (b'{"type": "exited", "id": true, "returncode": 0}', "numbers expected"),
    (b'{"type": "spawned", "id": 1, "pid": "12"}', "numbers expected"),
])
def test_garbage_is_refused_with_the_reason(packet: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode_reply(packet)


@pytest.mark.parametrize("change", [{"uid": None}, {"gid": None}, {"log_level": "loud"},
                                    {"name": ""}, {"module": ""}, {"uid": "0"}])
def test_bad_spawn_requests_are_refused(change: dict[str, object]) -> None:
    body = {"type": "spawn", **SPAWN.__dict__, **change}
    with pytest.raises(WireError):
        decode_request(json.dumps(body).encode())


def test_a_message_past_the_packet_bound_is_refused() -> None:
    with pytest.raises(WireError, match=str(MAX_PACKET)):
        encode(Failed(id=1, error="x" * MAX_PACKET))


def _spec(**confinement: object) -> VtsConfig:
    return VtsConfig(name="acme", command=(), grace_period=3.0, tenants=("acme",),
                     confinement=confine.VtsConfinement(**confinement))  # type: ignore[arg-type]


SANDBOX = confine.Sandbox(name="acme", identity=confine.Identity(400000, 400000, True),
                          mounts=(), pythonpath="/")


def test_it_serves_the_shipped_runtime_confined_as_it_is() -> None:
    confined, unconfined = ForkServer(confined=True), ForkServer(confined=False)
    assert confined.serves(_spec(), SANDBOX)
    assert not confined.serves(_spec(), None)  # a VTS with confine = "off": exec
    assert unconfined.serves(_spec(), None)
    assert not unconfined.serves(_spec(), SANDBOX)  # [vts.X] confine = "required": exec
    custom = VtsConfig(name="acme", command=("/bin/vts",), grace_period=3.0, tenants=("acme",))
    assert not confined.serves(custom, SANDBOX)
    assert not confined.serves(_spec(read_only_paths=("/srv/rules",)), SANDBOX)
    assert not confined.serves(_spec(writable_paths=("/srv/state",)), SANDBOX)


def test_the_fork_server_runs_in_bwrap_as_root_with_four_capabilities_only() -> None:
    rt = confine.Runtime(read_only=("/usr",), pythonpath="/opt/bridge")
    argv = confine.zygote_argv(["/usr/bin/python3", "-m", "x"], rt=rt, env={})
    assert argv[0] == confine.BWRAP
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in argv
    caps = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--cap-add"]
    assert caps == list(confine.ZYGOTE_CAPS)
    assert confine.SETPRIV not in argv  # its children take their identity themselves
    assert argv[argv.index("--") + 1:] == ["/usr/bin/python3", "-m", "x"]


def test_vts_spawn_defaults_to_fork_is_checked_and_shown() -> None:
    from ami_bridge import confshow
    from ami_bridge.config import parse
    from tests.unit.test_config import PATH, config_error, example

    raw = example()
    cfg = parse(raw, path=PATH)
    assert (cfg.vts_spawn, cfg.confine) == ("fork", "required")
    assert confshow.effective(raw, cfg)["bridge"]["vts_spawn"] == "fork"
    raw["bridge"] |= {"vts_spawn": "exec", "confine": "off"}
    assert (parse(raw, path=PATH).vts_spawn, parse(raw, path=PATH).confine) == ("exec", "off")
    raw["bridge"]["vts_spawn"] = "clone"
    config_error(raw, "bridge.vts_spawn", "'fork', 'exec'", "'clone'")
