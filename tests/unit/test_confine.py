"""The VTS confinement's pure parts (ami_bridge/supervision/confine.py): no process started.

tests/loopback/test_confine.py runs the result against the real OS.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from ami_bridge.supervision import confine
from ami_bridge.supervision.confine import (
    ConfineError,
    HostFacts,
    Identity,
    IdentityRequest,
    Mount,
    Runtime,
    VtsConfinement,
)
from ami_bridge.validation import ConfigError, failer

ROOT_HOST = HostFacts(euid=0, bwrap=True, setpriv=True)
RT = Runtime(read_only=("/usr", "/lib", "/opt/py"), pythonpath="/opt/app")
# A fake host filesystem: path -> symlink text (None: a plain file or directory).
FS: dict[str, str | None] = {"/usr": None, "/lib": "usr/lib", "/opt/py": None, "/opt/app": None,
                             "/srv/vts": None, "/srv/vts/state": None, "/srv/other": None,
                             "/tmp/rec": None, "/opt/elsewhere": "/data/x"}


def fs_readlink(path: str) -> str | None:
    return FS[path]


def fs_exists(path: str) -> bool:
    return path in FS


def users(table: Mapping[str, tuple[int, int]]) -> Any:
    def getpwnam(name: str) -> SimpleNamespace:
        uid, gid = table[name]  # KeyError like pwd.getpwnam
        return SimpleNamespace(pw_uid=uid, pw_gid=gid)

    return getpwnam


def plan(bridge_mode: str, vts: Mapping[str, VtsConfinement], *, facts: HostFacts = ROOT_HOST,
         probe_error: str | None = None) -> dict[str, confine.Sandbox | None]:
    def probe() -> str | None:
        return probe_error

    return confine.plan(bridge_mode, vts, facts=facts, rt=RT, probe_error=probe,
                        getpwnam=users({"vts-acme": (5001, 5002), "root": (0, 0)}),
                        readlink=fs_readlink, exists=fs_exists)


# -- identities -----------------------------------------------------------------------

def test_derived_uid_is_stable_and_in_its_range() -> None:
    # Pinned: a VTS must keep its uid across bridge versions and config edits.
    assert confine.derived_uid("acme") == 440894
    assert confine.derived_uid("globex") == 432890
    for name in ("a", "acme", "x" * 63):
        assert confine.UID_BASE <= confine.derived_uid(name) < confine.UID_BASE + confine.UID_SPAN
    # outside systemd's DynamicUser range and below its container ranges
    assert confine.UID_BASE > 65519 and confine.UID_BASE + confine.UID_SPAN <= 524288


def test_identities_derived_explicit_and_by_user_name() -> None:
    found = confine.assign_identities({
        "acme": IdentityRequest(),
        "globex": IdentityRequest(uid=7000),
        "initech": IdentityRequest(uid=7001, gid=8000),
        "hooli": IdentityRequest(user="vts-acme"),
        "umbrella": IdentityRequest(user="vts-acme", gid=9000),
    }, getpwnam=users({"vts-acme": (5001, 5002)}))
    derived = confine.derived_uid("acme")
    assert found == {
        "acme": Identity(derived, derived, derived=True),
        "globex": Identity(7000, 7000, derived=False),
        "initech": Identity(7001, 8000, derived=False),
        "hooli": Identity(5001, 5002, derived=False),
        "umbrella": Identity(5001, 9000, derived=False),  # shared on purpose: allowed
    }


@pytest.mark.parametrize("request_, message", [
    (IdentityRequest(user="nobody-here"), "vts.acme.user: no user 'nobody-here'"),
    (IdentityRequest(user="root"), "never runs with root's uid or gid"),
    (IdentityRequest(uid=7000, gid=0), "uid 7000 gid 0"),
])
def test_identities_refused(request_: IdentityRequest, message: str) -> None:
    with pytest.raises(ConfineError, match=message):
        confine.assign_identities({"acme": request_}, getpwnam=users({"root": (0, 0)}))


def _colliding_names() -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in itertools.count():
        name = f"vts{i}"
        uid = confine.derived_uid(name)
        if uid in seen:
            return seen[uid], name
        seen[uid] = name
    raise AssertionError("unreachable")


def test_a_derived_uid_shared_with_another_vts_is_refused() -> None:
    first, second = _colliding_names()
    with pytest.raises(ConfineError, match=rf"vts\.{first}: its derived uid \d+ is also the uid "
                       rf"of vts\.{second}; set uid explicitly"):
        confine.assign_identities({first: IdentityRequest(), second: IdentityRequest()})
    # ... and one derived uid meeting another VTS's explicit uid as well
    with pytest.raises(ConfineError, match=r"vts\.acme: its derived uid"):
        confine.assign_identities({"acme": IdentityRequest(),
                                   "globex": IdentityRequest(uid=confine.derived_uid("acme"))})
    # Given explicitly to both, the operator chose it.
    uid = confine.derived_uid("acme")
    found = confine.assign_identities({"acme": IdentityRequest(uid=uid),
                                       "globex": IdentityRequest(uid=uid)})
    assert found["acme"] == found["globex"] == Identity(uid, uid, derived=False)


# -- mounts ---------------------------------------------------------------------------

def mounts(read_only: list[str], writable: list[str] | None = None) -> tuple[Mount, ...]:
    return confine.plan_mounts(read_only, writable or [], readlink=fs_readlink, exists=fs_exists)


def test_mount_order_is_parents_first_with_0755_parents() -> None:
    planned = mounts(["/usr", "/lib", "/srv/vts/state", "/srv/vts", "/usr/", "/opt/elsewhere"],
                     ["/tmp/rec"])
    assert planned == (
        Mount("symlink", "usr/lib", "/lib"),
        Mount("ro-bind", "/usr", "/usr"),
        Mount("dir", "", "/opt"),
        Mount("ro-bind", "/opt/elsewhere", "/opt/elsewhere"),
        Mount("dir", "", "/srv"),
        Mount("ro-bind", "/srv/vts", "/srv/vts"),
        Mount("bind", "/tmp/rec", "/tmp/rec"),  # /tmp is the sandbox's own tmpfs
    )


def test_a_writable_path_inside_a_read_only_one_lands_on_top() -> None:
    assert mounts(["/srv/vts"], ["/srv/vts/state"]) == (
        Mount("dir", "", "/srv"),
        Mount("ro-bind", "/srv/vts", "/srv/vts"),
        Mount("bind", "/srv/vts/state", "/srv/vts/state"),
    )
    # the same path asked for both ways is writable, once
    assert mounts(["/srv/other"], ["/srv/other"]) == (
        Mount("dir", "", "/srv"), Mount("bind", "/srv/other", "/srv/other"))


@pytest.mark.parametrize("path, why", [
    ("relative/dir", "absolute path"), ("/", "absolute path other than /"),
    ("/proc/1", "outside /proc and /dev"), ("/dev", "outside /proc and /dev"),
    ("/srv/missing", "does not exist"),
])
def test_bad_mount_paths_are_refused(path: str, why: str) -> None:
    with pytest.raises(ConfineError, match=why):
        mounts(["/usr", path])


# -- the command line -----------------------------------------------------------------

def sandbox() -> confine.Sandbox:
    return confine.Sandbox(name="acme", identity=Identity(5001, 5002, derived=False),
                           mounts=(Mount("ro-bind", "/usr", "/usr"), Mount("dir", "", "/opt"),
                                   Mount("symlink", "usr/lib", "/lib")),
                           pythonpath="/opt/app")


def test_confined_argv() -> None:
    command = ["/usr/bin/python3", "-m", "ami_bridge.tenants.worker", "--vts", "acme"]
    argv = confine.confined_argv(command, sandbox=sandbox(),
                                 env={"AMI_BRIDGE_VTS_FD": "7", "PATH": "/usr/bin"})
    sep = argv.index("--")
    bwrap, setpriv = argv[:sep], argv[sep + 1:]
    assert bwrap[0] == confine.BWRAP
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in bwrap
    text = " ".join(bwrap)
    assert "--proc /proc --dev /dev --perms 1777 --size 16777216 --tmpfs /tmp" in text
    assert ("--ro-bind /usr /usr --perms 0755 --dir /opt --symlink usr/lib /lib --clearenv"
            in text)
    # the environment is exactly what is set after --clearenv; the caller's value wins
    env = {bwrap[i + 1]: bwrap[i + 2] for i, a in enumerate(bwrap) if a == "--setenv"}
    assert env == {"AMI_BRIDGE_VTS_FD": "7", "PATH": "/usr/bin", "HOME": "/tmp",
                   "LANG": "C.UTF-8", "PYTHONPATH": "/opt/app", "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTHONUNBUFFERED": "1"}
    assert bwrap.index("--clearenv") < bwrap.index("--setenv")
    assert bwrap[-2:] == ["--chdir", "/"]
    assert setpriv == [confine.SETPRIV, "--reuid=5001", "--regid=5002", "--clear-groups",
                       "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
                       *command]


def test_command_arguments_are_never_options_of_the_wrappers() -> None:
    argv = confine.confined_argv(["--bind", "/", "/"], sandbox=sandbox(), env={})
    assert argv[-4:] == ["--", "--bind", "/", "/"]
    assert argv.count("--") == 2


@pytest.mark.parametrize("command, env, message", [
    ([], {}, "empty command"),
    (["x"], {"A=B": "1"}, "bad environment variable"),
    (["x"], {"A": "a\0b"}, "bad environment variable"),
])
def test_confined_argv_refuses(command: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfineError, match=message):
        confine.confined_argv(command, sandbox=sandbox(), env=env)


# -- the decision ---------------------------------------------------------------------

@pytest.mark.parametrize("facts, reason", [
    (HostFacts(euid=0, bwrap=False, setpriv=True), "/usr/bin/bwrap is missing"),
    (HostFacts(euid=0, bwrap=True, setpriv=False), "/usr/bin/setpriv is missing"),
    (HostFacts(euid=1000, bwrap=True, setpriv=True), "runs as uid 1000, not root"),
])
def test_a_host_that_cannot_confine_refuses_to_start_naming_the_switch(
        facts: HostFacts, reason: str) -> None:
    assert confine.cannot_confine(facts) is not None
    with pytest.raises(ConfineError) as info:
        plan("required", {"acme": VtsConfinement(), "globex": VtsConfinement()}, facts=facts)
    message = str(info.value)
    assert reason in message
    assert "cannot confine VTS acme, globex" in message
    assert 'set confine = "off"' in message


def test_a_failed_probe_refuses_too() -> None:
    with pytest.raises(ConfineError, match="cannot confine VTS acme: namespaces refused"):
        plan("required", {"acme": VtsConfinement()}, probe_error="namespaces refused")


def test_off_runs_unconfined_without_looking_at_the_host() -> None:
    def probe() -> str | None:
        raise AssertionError("no probe when nothing is confined")

    result = confine.plan("off", {"acme": VtsConfinement(), "globex": VtsConfinement()},
                          facts=HostFacts(euid=1000, bwrap=False, setpriv=False), rt=RT,
                          probe_error=probe, readlink=fs_readlink, exists=fs_exists)
    assert result == {"acme": None, "globex": None}
    assert "UNCONFINED" in confine.unconfined_warning("acme")


def test_per_vts_override_both_ways() -> None:
    vts = {"acme": VtsConfinement(mode="off"),
           "globex": VtsConfinement(identity=IdentityRequest(user="vts-acme"),
                                    read_only_paths=("/srv/vts",))}
    result = plan("required", vts)
    assert result["acme"] is None
    globex = result["globex"]
    assert globex is not None and globex.identity == Identity(5001, 5002, derived=False)
    assert Mount("ro-bind", "/srv/vts", "/srv/vts") in globex.mounts
    # confine = "required" on one VTS holds even when the bridge's switch is off
    with pytest.raises(ConfineError, match="cannot confine VTS globex"):
        plan("off", {"acme": VtsConfinement(),
                     "globex": VtsConfinement(mode="required")},
             facts=HostFacts(euid=0, bwrap=False, setpriv=True))


# -- config keys ----------------------------------------------------------------------

FAIL = failer("bridge.toml")


def test_parse_vts_keys() -> None:
    assert confine.parse_vts({}, "vts.acme", FAIL) == VtsConfinement()
    parsed = confine.parse_vts({"confine": "off", "uid": 7000, "gid": 7001,
                                "read_only_paths": ["/srv/vts/"], "writable_paths": ["/var/x"]},
                               "vts.acme", FAIL)
    assert parsed == VtsConfinement(mode="off", identity=IdentityRequest(uid=7000, gid=7001),
                                    read_only_paths=("/srv/vts",), writable_paths=("/var/x",))
    assert confine.parse_vts({"user": "vts-acme"}, "vts.acme", FAIL).identity == \
        IdentityRequest(user="vts-acme")
    assert confine.parse_mode({}, "bridge", FAIL) == "required"
    assert confine.parse_mode({"confine": "off"}, "bridge", FAIL) == "off"
    keys = {"confine", "uid", "gid", "user", "read_only_paths", "writable_paths"}
    assert keys == confine.VTS_KEYS


@pytest.mark.parametrize("raw, message", [
    ({"confine": "maybe"}, "bridge.toml: vts.acme.confine: must be one of 'required', 'off'"),
    ({"confine": True}, "vts.acme.confine: must be one of"),
    ({"uid": 0}, "vts.acme.uid: must be a positive integer id other than 0"),
    ({"uid": True}, "vts.acme.uid: must be a positive integer"),
    ({"gid": "100"}, "vts.acme.gid: must be a positive integer"),
    ({"uid": 2**32 - 1}, "vts.acme.uid: must be a positive integer"),
    ({"user": ""}, "vts.acme.user: must be a user name"),
    ({"user": "a", "uid": 7000}, "vts.acme.user: give either user or uid"),
    ({"read_only_paths": "/srv"}, "vts.acme.read_only_paths: must be a list of absolute"),
    ({"writable_paths": ["rel"]}, "vts.acme.writable_paths: 'rel' must be an absolute path"),
    ({"writable_paths": ["/proc/self"]}, "outside /proc and /dev"),
])
def test_parse_vts_refuses(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        confine.parse_vts(raw, "vts.acme", FAIL)
    with pytest.raises(ConfigError, match=r"bridge\.confine: must be one of"):
        confine.parse_mode({"confine": "yes"}, "bridge", FAIL)
