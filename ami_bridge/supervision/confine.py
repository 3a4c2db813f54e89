"""Confinement of a VTS process: its sandbox, its uid, and whether this host can do it.

Contract. A VTS is untrusted code (DESIGN.md section 7: it may never read the bridge's
config or secrets, nor reach the FastAGI port, AMI or the control socket). `confined_argv`
wraps a VTS command in bubblewrap and setpriv so that it runs in network, PID, IPC, UTS and
cgroup namespaces of its own (its only interface is a loopback that is down: no route to
the host's ports, nor to abstract Unix sockets, which live per network namespace), in a
mount namespace holding only the system's /usr (with the /bin and /lib links), the Python
runtime, the ami_bridge package and the paths the operator lists, a private /proc, a
minimal /dev and a small empty /tmp; with a cleared environment; as its own unprivileged
uid and gid with no supplementary groups, no capabilities and no_new_privs; in a session
of its own (no terminal to push keystrokes into); and killed if the bridge dies. Only the
descriptors the caller passes survive (the supervisor passes the VTS's socket end and uses
close_fds=True). `assign_identities` gives every VTS its uid: the configured one or one
derived from its name, never root, never a derived uid shared with another VTS. `plan`
turns the operator's `confine` switch, the host's facts and each VTS's settings into one
`Sandbox` per VTS (None: run unconfined, and log `unconfined_warning` at every start), or
refuses with a `ConfineError` that names the switch. `host_facts`, `runtime` and `probe`
look at the real host; everything else is a pure function of its arguments.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ami_bridge
from ami_bridge.validation import ConfigError, Fail, join

# Debian package `bubblewrap` (0.8.0 on Debian 12, measured here); util-linux's setpriv
# (Essential on Debian). Absolute paths: the bridge never looks a sandbox tool up in PATH.
BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"

MODES = ("required", "off")
DEFAULT_MODE = "required"

# Derived uids: UID_BASE + crc32(name) mod UID_SPAN, gid the same number. 393216..458751
# lies in 65536..524287, which systemd leaves unused (systemd.io/UIDS-GIDS: DynamicUser=
# takes 61184..65519, container ranges start at 524288) and where Debian allocates no
# fixed ids; 64000-style numbers would collide with systemd's dynamic users. Hosts that
# hand out subordinate ids there (/etc/subuid) should set `uid` per VTS.
UID_BASE = 0x60000
UID_SPAN = 0x10000

# The VTS's private /tmp: enough for a runtime's scratch files, too small to eat the
# host's memory (tmpfs is RAM). The shipped runtime writes nothing there.
TMP_SIZE_BYTES = 16 * 1024 * 1024
# What a process needs of the host system, read-only, if present. /etc/localtime gives
# the host's zone to a runtime that asks for local time (zoneinfo itself is under /usr);
# /etc/ld.so.cache lets the dynamic linker find libraries outside its built-in paths.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/etc/localtime", "/etc/ld.so.cache")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Mount points that bwrap itself provides, fresh, inside the sandbox; an operator path
# there would either hide them or be hidden.
_RESERVED = ("/proc", "/dev")
# One confined start of the interpreter, at daemon start; it took about 60 ms here.
PROBE_TIMEOUT = 20.0


# Environment variables a VTS (or the fork server) never inherits from the bridge: anything
# named like a secret, and the AMI settings (DESIGN.md section 7).
SECRET_HINTS = ("SECRET", "PASSWORD", "TOKEN", "AMI_")


def environment_without_secrets(extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The bridge's environment minus every variable named like a secret, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not any(hint in k.upper() for hint in SECRET_HINTS)}
    return env | dict(extra)


class ConfineError(ConfigError):
    """A VTS cannot be confined as configured; the message says which, why, and the switch.
    A `ConfigError`: the daemon refuses to start, and a reload is refused, the same way."""


@dataclass(frozen=True)
class IdentityRequest:
    """`uid`, `gid` and `user` of one [vts.NAME] table; all None: a derived uid."""

    uid: int | None = None
    gid: int | None = None
    user: str | None = None


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    derived: bool


@dataclass(frozen=True)
class VtsConfinement:
    """The confinement keys of one [vts.NAME] table (see `parse_vts`)."""

    mode: str | None = None  # None: the [bridge] switch
    identity: IdentityRequest = IdentityRequest()
    read_only_paths: tuple[str, ...] = ()
    writable_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mount:
    op: str  # a bwrap option without its dashes: ro-bind, bind, symlink, or dir (mode 0755)
    source: str  # empty for dir
    dest: str


@dataclass(frozen=True)
class Runtime:
    """What every confined Python VTS needs of this host, read-only."""

    read_only: tuple[str, ...]
    pythonpath: str  # the directory holding the ami_bridge package


@dataclass(frozen=True)
class Sandbox:
    """Everything `confined_argv` needs for one VTS."""

    name: str
    identity: Identity
    mounts: tuple[Mount, ...]
    pythonpath: str


@dataclass(frozen=True)
class HostFacts:
    euid: int
    bwrap: bool  # BWRAP is an executable file
    setpriv: bool


# -- config keys ----------------------------------------------------------------------

BRIDGE_KEY = "confine"
VTS_KEYS = frozenset({"confine", "uid", "gid", "user", "read_only_paths", "writable_paths"})


def parse_mode(raw: Mapping[str, Any], where: str, fail: Fail,
               default: str | None = DEFAULT_MODE) -> str | None:
    value = raw.get(BRIDGE_KEY, default)
    if value is not default and value not in MODES:
        raise fail(join(where, BRIDGE_KEY),
                   f"must be one of {', '.join(repr(m) for m in MODES)}, got {value!r}")
    return value  # type: ignore[no-any-return]


def parse_vts(vraw: Mapping[str, Any], where: str, fail: Fail) -> VtsConfinement:
    """The confinement keys of one [vts.NAME] table (the caller rejects unknown keys)."""
    ids: dict[str, int] = {}
    for key in ("uid", "gid"):
        value = vraw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32 - 1:
            raise fail(join(where, key), f"must be a positive integer id other than 0 (root) "
                       f"and 4294967295, got {value!r}")
        ids[key] = value
    user = vraw.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        raise fail(join(where, "user"), f"must be a user name, got {user!r}")
    if user is not None and "uid" in ids:
        raise fail(join(where, "user"), "give either user or uid, not both")
    paths = {key: _abs_paths(vraw, key, where, fail)
             for key in ("read_only_paths", "writable_paths")}
    return VtsConfinement(
        mode=parse_mode(vraw, where, fail, default=None),
        identity=IdentityRequest(uid=ids.get("uid"), gid=ids.get("gid"), user=user),
        read_only_paths=paths["read_only_paths"], writable_paths=paths["writable_paths"])


def _abs_paths(raw: Mapping[str, Any], key: str, where: str, fail: Fail) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise fail(join(where, key), f"must be a list of absolute paths, got {value!r}")
    for path in value:
        norm = os.path.normpath(path)
        if not os.path.isabs(path) or norm == "/" or _under(norm, _RESERVED):
            raise fail(join(where, key), f"{path!r} must be an absolute path other than /, "
                       f"outside {' and '.join(_RESERVED)}")
    return tuple(os.path.normpath(p) for p in value)


# -- identities -----------------------------------------------------------------------

def derived_uid(name: str) -> int:
    return UID_BASE + zlib.crc32(name.encode()) % UID_SPAN


def assign_identities(
    requests: Mapping[str, IdentityRequest],
    *,
    getpwnam: Callable[[str], Any] = pwd.getpwnam,
) -> dict[str, Identity]:
    """One uid/gid per VTS. Operators may give two VTS the same uid on purpose; a derived
    uid that meets any other VTS's uid is refused, since nobody chose that sharing."""
    found: dict[str, Identity] = {}
    for name in sorted(requests):
        req = requests[name]
        if req.user is not None:
            try:
                entry = getpwnam(req.user)
            except KeyError:
                raise ConfineError(f"vts.{name}.user: no user {req.user!r} on this host") from None
            uid, gid, derived = int(entry.pw_uid), int(entry.pw_gid), False
        elif req.uid is not None:
            uid, gid, derived = req.uid, req.uid, False
        else:
            uid = gid = derived_uid(name)
            derived = True
        gid = req.gid if req.gid is not None else gid
        if uid == 0 or gid == 0:
            raise ConfineError(f"vts.{name}: runs as uid {uid} gid {gid}; a VTS never runs with "
                               "root's uid or gid (choose another user)")
        found[name] = Identity(uid=uid, gid=gid, derived=derived)
    for name, ident in found.items():
        if not ident.derived:
            continue
        for other, theirs in found.items():
            if other != name and theirs.uid == ident.uid:
                raise ConfineError(
                    f"vts.{name}: its derived uid {ident.uid} is also the uid of vts.{other}; "
                    f"set uid explicitly in [vts.{name}] (for example uid = {ident.uid + 1})")
    return found


# -- mounts ---------------------------------------------------------------------------

def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _readlink(path: str) -> str | None:
    return os.readlink(path) if os.path.islink(path) else None


def plan_mounts(
    read_only: Sequence[str],
    writable: Sequence[str] = (),
    *,
    readlink: Callable[[str], str | None] = _readlink,
    exists: Callable[[str], bool] = os.path.lexists,
) -> tuple[Mount, ...]:
    """bwrap mounts for these host paths, each at its own path. A path that is a symlink
    to somewhere already mounted stays a symlink (/lib -> usr/lib); a path inside another
    one of the same kind is left out; parents come before children, so a writable path
    inside a read-only one (or the reverse) lands on top."""
    wanted: dict[str, str] = {}
    for path, op in [*((p, "ro-bind") for p in read_only), *((p, "bind") for p in writable)]:
        norm = os.path.normpath(path)
        if not os.path.isabs(norm) or norm == "/" or _under(norm, _RESERVED):
            raise ConfineError(f"cannot mount {path!r} into a VTS sandbox: need an absolute "
                               f"path other than / and outside {' and '.join(_RESERVED)}")
        if not exists(norm):
            raise ConfineError(f"cannot mount {path!r} into a VTS sandbox: it does not exist")
        if wanted.get(norm) != "bind":  # writable wins over read-only for the same path
            wanted[norm] = op
    mounts: list[Mount] = []
    for path in sorted(wanted, key=lambda p: (p.count("/"), p)):
        op = wanted[path]
        parent = _nearest_ancestor(path, wanted)
        if parent is not None and wanted[parent] == op:
            continue
        link = readlink(path)
        if link is not None and op == "ro-bind":
            target = os.path.normpath(os.path.join(os.path.dirname(path), link))
            if _under(target, [p for p in wanted if p != path and wanted[p] == "ro-bind"]):
                mounts.append(Mount("symlink", link, path))
                continue
        mounts.append(Mount(op, path, path))
    return _with_parents(mounts)


def _with_parents(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """Each mount preceded by `dir` entries for its missing parents. bwrap 0.8 makes the
    parents it creates by itself mode 0700 (measured here), which the VTS's uid could
    not walk through; these get 0755 and stay as empty as bwrap's own."""
    out: list[Mount] = []
    made: set[str] = {"/", "/tmp"}  # the sandbox's root, and its tmpfs (confined_argv)
    mounted: list[str] = []
    for mount in mounts:
        parent = os.path.dirname(mount.dest)
        chain: list[str] = []
        while parent not in made and not _under(parent, mounted):
            chain.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(chain):
            out.append(Mount("dir", "", directory))
            made.add(directory)
        out.append(mount)
        mounted.append(mount.dest)
    return tuple(out)


def _nearest_ancestor(path: str, paths: Iterable[str]) -> str | None:
    ancestors = [p for p in paths if p != path and _under(path, [p])]
    return max(ancestors, key=len) if ancestors else None


def runtime(*, exists: Callable[[str], bool] = os.path.lexists) -> Runtime:
    """This interpreter (its venv and base installation) and the ami_bridge package. The
    package's symlinked sub-packages (ami_bridge/agi -> ../agi) are mounted where their
    links point, by path, so the links resolve inside the sandbox too."""
    package = os.path.dirname(os.path.abspath(ami_bridge.__file__))
    linked = [os.path.normpath(os.path.join(package, os.readlink(entry.path)))
              for entry in os.scandir(package) if entry.is_symlink()]
    python = {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix,
              os.path.realpath(sys.executable)}
    paths = [p for p in SYSTEM_PATHS if exists(p)] + sorted(python) + [package, *linked]
    return Runtime(read_only=tuple(paths), pythonpath=os.path.dirname(package))


def sandbox_for(name: str, identity: Identity, settings: VtsConfinement, *, rt: Runtime,
                readlink: Callable[[str], str | None] = _readlink,
                exists: Callable[[str], bool] = os.path.lexists) -> Sandbox:
    try:
        mounts = plan_mounts([*rt.read_only, *settings.read_only_paths],
                             settings.writable_paths, readlink=readlink, exists=exists)
    except ConfineError as exc:
        raise ConfineError(f"vts.{name}: {exc}") from None
    return Sandbox(name=name, identity=identity, mounts=mounts, pythonpath=rt.pythonpath)


# -- the command line -----------------------------------------------------------------

def confined_argv(command: Sequence[str], *, sandbox: Sandbox, env: Mapping[str, str],
                  bwrap: str = BWRAP, setpriv: str = SETPRIV) -> list[str]:
    """argv that runs `command` confined. `env` is the VTS's whole environment besides
    PATH, HOME, LANG and the Python variables set here (the supervisor passes the
    AMI_BRIDGE_VTS_* variables); nothing of the bridge's own environment gets through."""
    if not command:
        raise ConfineError(f"vts.{sandbox.name}: empty command")
    argv = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(TMP_SIZE_BYTES), "--tmpfs", "/tmp"]
    for mount in sandbox.mounts:
        if mount.op == "dir":
            argv += ["--perms", "0755", "--dir", mount.dest]
        else:
            argv += [f"--{mount.op}", mount.source, mount.dest]
    argv.append("--clearenv")
    full_env = {
        "PATH": SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8",
        "PYTHONPATH": sandbox.pythonpath,
        # the mounts are read-only: don't try to write .pyc files
        "PYTHONDONTWRITEBYTECODE": "1",
        # output reaches the bridge's log as written, and a crash's traceback is not lost
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    for key, value in full_env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ConfineError(f"vts.{sandbox.name}: bad environment variable {key!r}")
        argv += ["--setenv", key, value]
    ident = sandbox.identity
    argv += ["--chdir", "/", "--",
             setpriv, f"--reuid={ident.uid}", f"--regid={ident.gid}", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *command]
    return argv


# What the fork server (ami_bridge.supervision.forkserver) keeps of root's capabilities,
# each for one step of confining a child (forkchild.become_vts): namespaces, mounts and
# sending a child's pid in SCM_CREDENTIALS; setgroups/setresgid; setresuid; emptying the
# bounding set. Everything else bwrap drops, and each child drops these too.
ZYGOTE_CAPS = ("CAP_SYS_ADMIN", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP")


def zygote_argv(command: Sequence[str], *, rt: Runtime, env: Mapping[str, str],
                bwrap: str = BWRAP) -> list[str]:
    """argv that runs the fork server confined: the namespaces and mounts of
    `confined_argv` for a VTS without per-VTS paths, but as root with `ZYGOTE_CAPS` (no
    setpriv): its children take their own uid, namespaces, /proc and /tmp themselves.
    `env` as for `confined_argv`."""
    sandbox = Sandbox(name="fork-server", identity=Identity(uid=0, gid=0, derived=False),
                      mounts=plan_mounts(rt.read_only), pythonpath=rt.pythonpath)
    argv = confined_argv(command, sandbox=sandbox, env=env, bwrap=bwrap)
    cut = argv.index("--chdir")
    caps = [arg for cap in ZYGOTE_CAPS for arg in ("--cap-add", cap)]
    return [*argv[:cut], *caps, "--chdir", "/", "--", *command]


def unconfined_warning(name: str) -> str:
    return (f"VTS {name} runs UNCONFINED (confine = \"off\"): it has the bridge's uid and "
            "network and can read the bridge's config, secrets and control socket")


# -- the host -------------------------------------------------------------------------

def host_facts(*, bwrap: str = BWRAP, setpriv: str = SETPRIV) -> HostFacts:
    def runnable(path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    return HostFacts(euid=os.geteuid(), bwrap=runnable(bwrap), setpriv=runnable(setpriv))


def cannot_confine(facts: HostFacts) -> str | None:
    """Why this host cannot confine a VTS, or None."""
    if not facts.bwrap:
        return f"{BWRAP} is missing (install the bubblewrap package)"
    if not facts.setpriv:
        return f"{SETPRIV} is missing (install util-linux)"
    if facts.euid != 0:
        return (f"the bridge runs as uid {facts.euid}, not root, so it cannot give a VTS a "
                "uid of its own")
    return None


def probe(rt: Runtime, *, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Start the interpreter confined once and import the VTS runtime: bwrap can be present
    yet refused namespaces (a container without CAP_SYS_ADMIN). None: it worked."""
    ident = Identity(uid=UID_BASE, gid=UID_BASE, derived=True)
    sandbox = sandbox_for("probe", ident, VtsConfinement(), rt=rt)
    check = (f"import os, ami_bridge.tenants.worker; assert os.getuid() == {ident.uid}, "
             "\"setpriv did not change the uid\"")
    argv = confined_argv([sys.executable, "-c", check],
                         sandbox=sandbox, env={})
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"a confined test start failed: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "backslashreplace").strip().splitlines()
        return (f"a confined test start exited with status {done.returncode}: "
                f"{said[-1] if said else 'no output'}")
    return None


def plan(
    bridge_mode: str,
    vts: Mapping[str, VtsConfinement],
    *,
    facts: HostFacts,
    rt: Runtime,
    probe_error: Callable[[], str | None] = lambda: None,
    getpwnam: Callable[[str], Any] = pwd.getpwnam,
    readlink: Callable[[str], str | None] = _readlink,
    exists: Callable[[str], bool] = os.path.lexists,
    where: str = "[bridge]",
) -> dict[str, Sandbox | None]:
    """One sandbox per VTS, None for those the operator runs unconfined. Refuses (raises)
    when a VTS must be confined and this host cannot, naming the switch that would let
    the bridge start anyway."""
    modes = {name: settings.mode or bridge_mode for name, settings in vts.items()}
    confined = sorted(name for name, mode in modes.items() if mode == "required")
    if not confined:
        return dict.fromkeys(vts)
    reason = cannot_confine(facts) or probe_error()
    if reason is not None:
        raise ConfineError(
            f"{where}: cannot confine VTS {', '.join(confined)}: {reason}. Make the host able "
            f"to (CI installs bubblewrap and runs as root), or set {BRIDGE_KEY} = \"off\" in "
            "[bridge] or [vts.NAME] to run them unconfined: then each runs as the bridge's "
            "uid and can read its config and secrets")
    idents = assign_identities({n: vts[n].identity for n in confined}, getpwnam=getpwnam)
    sandboxes: dict[str, Sandbox | None] = dict.fromkeys(vts)
    for name in confined:
        sandboxes[name] = sandbox_for(name, idents[name], vts[name], rt=rt,
                                      readlink=readlink, exists=exists)
    return sandboxes


def plan_for_host(bridge_mode: str, vts: Mapping[str, VtsConfinement]) -> dict[str, Sandbox | None]:
    """`plan` on this host: its facts, its runtime and, if anything is to be confined, one
    probe start. The daemon calls it at start and on reload."""
    rt = runtime()
    return plan(bridge_mode, vts, facts=host_facts(), rt=rt, probe_error=lambda: probe(rt))

