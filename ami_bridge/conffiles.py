"""Where the bridge config is and which files make it: the main file, then `conf.d/`.

Contract. `locate` picks the main file: `-c/--config` if given, else `$AMI_BRIDGE_CONFIG`
if set and not empty, else `/etc/ami-bridge/bridge.toml`, and remembers which of the three
it was, so "no such file" says where the path came from. `read` parses the main file and
then every `*.toml` in the `conf.d` directory next to it (names starting with a dot
skipped), in lexical order of their names, merging each into the result: a table merges
key by key, recursively; any other value (string, number, boolean, array, array of
tables) replaces the earlier one whole; a table where an earlier file has a value (or the
reverse) is refused, naming the fragment and the key. `Sources` remembers which file set
each key; its `failer` is the `Fail` the loader uses, so an error names the file that
wrote the offending key (all of them, joined by ` + `, for a table several files wrote).
Nothing here interprets a key: relative paths keep meaning what they mean in the main
file (config.py resolves them against the main file's directory).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ami_bridge.validation import ConfigError, Fail, join

# The operator's place for it (issue 13; the systemd unit and docs/configuration.md name it).
DEFAULT_CONFIG_PATH = Path("/etc/ami-bridge/bridge.toml")
CONFIG_ENV = "AMI_BRIDGE_CONFIG"
FRAGMENT_DIR = "conf.d"  # next to the main file
FRAGMENT_SUFFIX = ".toml"


@dataclass(frozen=True)
class ConfigLocation:
    """The main config file and why that one (`origin`, quoted in errors)."""

    path: Path
    origin: str
    given: bool = True  # False: the default path, which nobody named


def locate(flag: Path | None, environ: Mapping[str, str]) -> ConfigLocation:
    """The main config file: the flag beats the environment, which beats the default."""
    if flag is not None:
        return ConfigLocation(flag, "given by -c/--config")
    env = environ.get(CONFIG_ENV, "")
    if env:
        return ConfigLocation(Path(env), f"given by ${CONFIG_ENV}")
    return ConfigLocation(DEFAULT_CONFIG_PATH, f"the default; give -c/--config or set "
                          f"${CONFIG_ENV}", given=False)


def require(location: ConfigLocation) -> Path:
    """The located path, or ConfigError naming it and its origin when it does not exist."""
    if not location.path.exists():
        raise ConfigError(f"{location.path}: no such config file ({location.origin})")
    return location.path


@dataclass(frozen=True)
class Sources:
    """The files one config was read from, and which of them wrote each key.

    `origins` maps a dotted key a fragment wrote (or merged into) to the files that
    wrote it, in order; a key absent from it, and not below one present, is the main
    file's."""

    main: Path
    fragments: tuple[Path, ...] = ()
    origins: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)

    def files_of(self, key: str) -> tuple[Path, ...]:
        """The files that wrote `key` (or the nearest table above it that was written)."""
        while True:
            if key in self.origins:
                return self.origins[key]
            cut = max(key.rfind("."), key.rfind("["))
            if cut <= 0:
                return (self.main,)
            key = key[:cut]

    def failer(self) -> Fail:
        def fail(key: str, message: str) -> ConfigError:
            where = " + ".join(str(f) for f in self.files_of(key))
            return ConfigError(f"{where}: {key}: {message}")

        return fail


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def fragments(main: Path) -> tuple[Path, ...]:
    """The `conf.d/*.toml` files next to `main`, in the order they merge."""
    directory = main.parent / FRAGMENT_DIR
    if not directory.exists():
        return ()
    if not directory.is_dir():
        raise ConfigError(f"{directory}: must be a directory of *{FRAGMENT_SUFFIX} "
                          f"fragments (merged after {main})")
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot list: {exc.strerror}") from None
    return tuple(p for p in entries if p.name.endswith(FRAGMENT_SUFFIX)
                 and not p.name.startswith(".") and p.is_file())


def read(main: Path) -> tuple[dict[str, Any], Sources]:
    """The main file merged with its fragments, and where each key came from."""
    raw = read_toml(main)
    found = fragments(main)
    origins: dict[str, tuple[Path, ...]] = {}
    sources = Sources(main, found, origins)  # reads `origins` as the merge fills it
    for fragment in found:
        _merge(raw, read_toml(fragment), fragment, "", origins, sources)
    return raw, Sources(main, found, dict(origins))


def _merge(base: dict[str, Any], update: Mapping[str, Any], source: Path, prefix: str,
           origins: dict[str, tuple[Path, ...]], sources: Sources) -> None:
    for key, value in update.items():
        dotted = join(prefix, key)
        if key not in base:
            base[key] = copy.deepcopy(value)
            origins[dotted] = (source,)
            continue
        old = base[key]
        if isinstance(old, dict) and isinstance(value, dict):
            for child in old:  # keys already there keep naming the files that wrote them
                origins.setdefault(join(dotted, child), sources.files_of(join(dotted, child)))
            before = sources.files_of(dotted)
            origins[dotted] = (*before, source) if source not in before else before
            _merge(old, value, source, dotted, origins, sources)
        elif isinstance(old, dict) or isinstance(value, dict):
            was = " + ".join(str(f) for f in sources.files_of(dotted))
            raise ConfigError(f"{source}: {dotted}: is {_kind(value)} here but "
                              f"{_kind(old)} in {was}; a fragment adds keys to a table "
                              "or replaces a value, never a table by a value or the "
                              "reverse")
        else:
            base[key] = copy.deepcopy(value)  # nothing below a value was recorded
            origins[dotted] = (source,)


def _kind(value: object) -> str:
    return "a table" if isinstance(value, dict) else "a value"
