"""Live change of tenant config: render -> check -> swap -> reload, or roll everything back.

`apply_config` takes the newly loaded config (already validated: a broken tenant file
never gets here) and, with the callbacks the daemon passes in, does in order:

1. render every tenant's fragment (`dialplan.render`);
2. lint the rendered files together with the hand-written ones exactly as Asterisk will
   read them (`extensions.conf` and its includes, rendered text laid over the disk, with
   the config's `[shared]` and `[operator]` contexts and `[owners]` grants), and check
   every queue and member of the rendered queues.conf against its owner
   (ami_bridge.ownership); any
   finding stops here and nothing is touched (`conf render` uses the same check);
3. write the changed fragments atomically, keeping the old text;
4. swap the bridge's venue map (new venues are known before Asterisk can send calls);
5. reload the dialplan and queues over AMI and check with Asterisk's own `ShowDialPlan`
   that every venue of every tenant is there.

A failure in 3-5 restores the old fragments and venue map and reloads again, and the
result says why. A successful result carries its `Undo` (the fragments it replaced and
the config it swapped out), which `revert` puts back: a cluster apply
(ami_bridge.cluster.apply) rolls a committed node back with it when another node fails.
`refusal` is steps 1-2 alone (render and check, nothing written): a cluster's prepare.
Other tenants' calls are unaffected: a dialplan reload does not touch
calls in progress, and their venue entries are unchanged by the swap.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ami_bridge.agi.variables import DEFAULT_STASIS_APP
from ami_bridge.ami.admin import ReloadError
from ami_bridge.config import BridgeConfig
from ami_bridge.dialplan.lint import BridgeAgi, check
from ami_bridge.dialplan.parser import DialplanReadError, DiskSource, OverlaySource
from ami_bridge.dialplan.render import OUTPUT_DIR, render_tree, write_tree
from ami_bridge.ownership import check_rendered_queues

log = logging.getLogger(__name__)

MAX_FINDINGS_SHOWN = 10


@dataclass(frozen=True)
class Undo:
    """What a successful apply replaced: enough to put it all back (`revert`)."""
    conf_dir: Path
    files: Mapping[str, str]  # the fragments it wrote
    backup: Mapping[str, str | None]  # their old text (None: did not exist)
    previous: BridgeConfig  # the config it swapped out


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    message: str
    changed: list[str] = field(default_factory=list)
    undo: Undo | None = field(default=None, repr=False, compare=False)  # set when ok


def refusal(new: BridgeConfig) -> str | None:
    """Render and check `new` against its Asterisk conf dir, writing nothing: why it
    would be refused, or None when it may be applied."""
    return _refusal(new, render_tree(new))


def _refusal(new: BridgeConfig, files: dict[str, str]) -> str | None:
    conf_dir = new.asterisk_conf_dir
    if conf_dir is None:
        return (f"{new.path}: bridge.asterisk_conf_dir is not set: "
                "where should the rendered fragments go?")
    findings = lint(files, conf_dir, new)
    if findings:
        shown = "\n".join(findings[:MAX_FINDINGS_SHOWN])
        more = len(findings) - MAX_FINDINGS_SHOWN
        return ("conf check refused the new dialplan; nothing changed:\n"
                + shown + (f"\n... and {more} more" if more > 0 else ""))
    return None


async def apply_config(
    *,
    current: BridgeConfig,
    new: BridgeConfig,
    swap_bridge: Callable[[BridgeConfig], Awaitable[None]],
    reload_asterisk: Callable[[], Awaitable[None]],
    missing_contexts: Callable[[list[str]], Awaitable[list[str]]],
) -> ApplyResult:
    files = render_tree(new)
    refused = _refusal(new, files)
    if refused is not None:
        return ApplyResult(False, refused)
    conf_dir = new.asterisk_conf_dir
    assert conf_dir is not None  # _refusal says so otherwise
    backup = _backup(conf_dir, files)
    changed: list[str] = []
    reloaded = False  # whether Asterisk may have read the new fragments
    try:
        changed = write_tree(files, conf_dir)
        stale = [rel for rel in backup if rel not in files]
        for rel in stale:
            (conf_dir / rel).unlink()
        await swap_bridge(new)
        reloaded = True
        await reload_asterisk()
        missing = await missing_contexts(sorted(new.venues))
        if missing:
            raise RuntimeError(f"after the reload Asterisk lacks venue contexts "
                               f"{', '.join(missing)}")
    except Exception as exc:
        log.error("apply failed, rolling back: %s", exc)
        if isinstance(exc, ReloadError) and not exc.started:
            reloaded = False  # Asterisk never read the new fragments
        _restore(conf_dir, files, backup)
        try:
            await swap_bridge(current)
            if reloaded:
                await reload_asterisk()
        except Exception as again:
            return ApplyResult(False, f"apply failed ({exc}) and the rollback reload failed "
                               f"too ({again}); fragments restored on disk")
        return ApplyResult(False, f"apply failed, rolled back: {exc}")
    changed += [f"{rel} (removed)" for rel in backup if rel not in files]
    log.info("applied %s: %s", new.path, ", ".join(changed) or "no fragment changed")
    return ApplyResult(True, "applied", changed,
                       Undo(conf_dir=conf_dir, files=files, backup=backup, previous=current))


async def revert(undo: Undo, *, swap_bridge: Callable[[BridgeConfig], Awaitable[None]],
                 reload_asterisk: Callable[[], Awaitable[None]]) -> None:
    """Put back what a successful apply replaced: fragments, venue map, Asterisk's dialplan."""
    _restore(undo.conf_dir, dict(undo.files), dict(undo.backup))
    await swap_bridge(undo.previous)
    await reload_asterisk()
    log.info("reverted the apply of %s", undo.previous.path)


def agi_addresses(config: BridgeConfig) -> frozenset[tuple[str, int]]:
    """Where the venues may send AGI: the bridge's own listener (the S604 lint rule)."""
    return frozenset({(config.agi_host, config.agi_port)})


def bridge_agi(config: BridgeConfig) -> BridgeAgi:
    """What `[globals] AB_AGI_URL` must name: this listener and its secret (V503)."""
    return BridgeAgi(agi_addresses(config), config.agi_secret)


def stasis_app(config: BridgeConfig) -> str:
    """The only ARI application a venue may enter: the bridge's own (the S605 rule)."""
    return config.ari.app if config.ari is not None else DEFAULT_STASIS_APP


def lint(files: dict[str, str], conf_dir: Path, config: BridgeConfig) -> list[str]:
    """Findings for the rendered text as Asterisk would load it with the files on disk,
    and for the rendered queues; empty: safe to write."""
    overlay = OverlaySource({conf_dir / rel: text for rel, text in files.items()}, DiskSource())
    top = conf_dir / "extensions.conf"
    entry = top if overlay.read(top) is not None else conf_dir / f"{OUTPUT_DIR}/extensions.conf"
    queues = f"{OUTPUT_DIR}/queues.conf"
    found = check_rendered_queues(files.get(queues, ""), owners=config.owners,
                                  where=str(conf_dir / queues))
    try:
        found += [str(f) for f in check(
            [entry], tenants=sorted(config.tenants), source=overlay, config_dir=conf_dir,
            owners=dict(config.owners.contexts), shared=config.owners.shared_contexts,
            operator=config.owners.operator_contexts, bridge_agi=bridge_agi(config),
            allow=config.dialplan_allow, agi_addresses=agi_addresses(config),
            stasis_app=stasis_app(config))]
    except DialplanReadError as exc:
        found.append(f"{exc}")
    return found


def _backup(conf_dir: Path, files: dict[str, str]) -> dict[str, str | None]:
    """Old text of every file apply may write or remove (None: did not exist)."""
    tenants_dir = conf_dir / OUTPUT_DIR / "tenants"
    existing = {str(p.relative_to(conf_dir)) for p in tenants_dir.glob("*.conf")} \
        if tenants_dir.is_dir() else set()
    backup: dict[str, str | None] = {}
    for rel in sorted(set(files) | existing):
        path = conf_dir / rel
        backup[rel] = path.read_text(encoding="utf-8") if path.is_file() else None
    return backup


def _restore(conf_dir: Path, files: dict[str, str], backup: dict[str, str | None]) -> None:
    write_tree({rel: text for rel, text in backup.items() if text is not None}, conf_dir)
    for rel, text in backup.items():
        if text is None and (conf_dir / rel).exists():
            (conf_dir / rel).unlink()
