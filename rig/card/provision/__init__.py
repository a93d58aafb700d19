"""Provisioning: make a freshly written card join Wi-Fi, create the user, enable SSH
and set the hostname on first boot, by editing its FAT boot partition in place.

One module per scheme (the mechanism a generation of images reads at first
boot); the scheme is detected from the card (`detect`) unless the config
(``provision.scheme``) or the caller names one. Settings are validated before
the card is opened for writing, every file is rendered before anything is
written, and all writes land in one commit: bad input or a full partition
leaves the card untouched.

    result = provision_card(Path("octopi.img"), ProvisionSettings.from_config(cfg, "pi3-a"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from rig.card.fat import open_boot_partition
from rig.errors import ConfigError

from . import cloud_init, custom_toml, firstrun, nmconnection, octopi_legacy, wpa_supplicant
from .common import (
    FIRSTRUN_TOKENS,
    CardView,
    Context,
    FileChange,
    cmdline_line,
    config_txt_change,
)
from .detect import detect
from .settings import ProvisionSettings

__all__ = [
    "SCHEMES",
    "ProvisionResult",
    "ProvisionSettings",
    "WrittenFile",
    "detect",
    "provision_card",
]

SCHEMES: dict[str, ModuleType] = {
    m.NAME: m
    for m in (octopi_legacy, wpa_supplicant, firstrun, nmconnection, custom_toml, cloud_init)
}
MASK = "********"
_log = logging.getLogger(__name__)


class WrittenFile:
    """One file of the boot partition and what provisioning did to it.

    Deliberately not a dataclass: results end up in reports (``dataclasses.asdict``,
    ``repr``), and those must show path, action and size, never the content.
    """

    __slots__ = ("action", "content", "note", "path", "secrets")

    def __init__(
        self,
        path: str,
        action: str,  # "written", "unchanged", "deleted"
        content: bytes | None,
        secrets: tuple[str, ...] = (),
        note: str = "",
    ) -> None:
        self.path = path
        self.action = action
        self.content = content
        self.secrets = secrets
        self.note = note

    def __repr__(self) -> str:
        return f"WrittenFile({self.path!r}, {self.action}, {self.size} bytes)"

    @property
    def size(self) -> int:
        return len(self.content or b"")

    def masked(self) -> str:
        """The content as text with every secret replaced by ********."""
        text = (self.content or b"").decode("utf-8", "replace")
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, MASK)
        return text


@dataclass(frozen=True)
class ProvisionResult:
    target: Path
    scheme: str
    reason: str  # why this scheme: detected from ..., or given by ...
    files: tuple[WrittenFile, ...]
    warnings: tuple[str, ...]
    dry_run: bool

    def file(self, path: str) -> WrittenFile | None:
        for f in self.files:
            if f.path.casefold() == path.casefold():
                return f
        return None

    def summary(self) -> dict[str, object]:
        """JSON-friendly facts for reports: scheme, why, files with action and size; no content."""
        return {
            "target": str(self.target),
            "scheme": self.scheme,
            "reason": self.reason,
            "files": [{"path": f.path, "action": f.action, "size": f.size} for f in self.files],
            "warnings": list(self.warnings),
            "dry_run": self.dry_run,
        }

    @property
    def changed(self) -> list[WrittenFile]:
        return [f for f in self.files if f.action != "unchanged"]

    def describe(self, *, contents: bool = False) -> str:
        """Human summary (secrets masked), used by `rig provision` and reports."""
        verb = "would provision" if self.dry_run else "provisioned"
        out = [f"{self.target}: {verb} with scheme {self.scheme} ({self.reason})"]
        for f in self.files:
            what = "would be " + f.action if self.dry_run and f.action != "unchanged" else f.action
            note = f"  ({f.note})" if f.note else ""
            out.append(f"  {f.path:<28} {what:<18} {f.size:>6} bytes{note}")
        for w in self.warnings:
            out.append(f"  warning: {w}")
        if contents:
            for f in self.files:
                if f.content is None:
                    continue
                out += ["", f"--- {f.path} ---", f.masked().rstrip("\n")]
        return "\n".join(out)


def _choose(
    card: CardView, settings: ProvisionSettings, scheme: str | None
) -> tuple[str, str, str]:
    """(scheme, reason, where it was named)."""
    if scheme:
        name, reason, where = scheme, "given on the command line", "--scheme"
    elif settings.scheme:
        name, reason = settings.scheme, "set in the configuration"
        where = settings.where("scheme")
    else:
        name, reason = detect(card)
        where = "detected"
    if name not in SCHEMES:
        raise ConfigError(
            f"unknown provisioning scheme {name!r}",
            where=where,
            hint="one of: " + ", ".join(SCHEMES),
        )
    return name, reason, where


def _cleanup(card: CardView, scheme: str, changes: list[FileChange]) -> list[FileChange]:
    """Undo a firstrun provisioning when the card is now provisioned another way."""
    if scheme == "firstrun":
        return []
    extra: list[FileChange] = []
    script = card.text("firstrun.sh")
    if script and "Written by rig provision" in script:
        extra.append(FileChange("firstrun.sh", None, note="left from a firstrun provisioning"))
    text = card.text("cmdline.txt") or ""
    if not any(c.path == "cmdline.txt" for c in changes) and any(
        w.startswith(FIRSTRUN_TOKENS[:3]) for w in text.split()
    ):
        extra.append(FileChange("cmdline.txt", (cmdline_line(card) + "\n").encode()))
    return extra


def provision_card(
    target: Path,
    settings: ProvisionSettings,
    *,
    scheme: str | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] | logging.Logger | None = None,
    hostname_on_root: bool = False,
) -> ProvisionResult:
    """Provision the card or image at `target`; with dry_run, only say what would change.

    ``hostname_on_root``: the card's root file system already has the hostname (a
    starting-state snapshot's fresh identity wrote it): no file that only sets it."""
    emit: Callable[[str], None]
    if log is None:
        emit = _log.info
    elif isinstance(log, logging.Logger):
        emit = log.info
    else:
        emit = log
    settings.validate()
    target = Path(target)
    with open_boot_partition(target, write=not dry_run) as vol:
        card = CardView(vol)
        name, reason, _ = _choose(card, settings, scheme)
        ctx = Context(settings, card, hostname_on_root=hostname_on_root)
        changes = SCHEMES[name].plan(ctx)
        txt = config_txt_change(card, settings)
        if txt is not None:
            changes.append(txt)
        changes += _cleanup(card, name, changes)
        files: list[WrittenFile] = []
        for change in changes:
            old = card.read(change.path)
            if change.content is None:
                if old is None:
                    continue
                vol.delete(change.path)
                action = "deleted"
            elif old == change.content:
                action = "unchanged"
            else:
                vol.write(change.path, change.content)
                action = "written"
            files.append(
                WrittenFile(change.path, action, change.content, change.secrets, change.note)
            )
        # dry run: the writes above stayed in the volume's memory and are dropped on exit
        result = ProvisionResult(target, name, reason, tuple(files), tuple(ctx.warnings), dry_run)
    emit(
        f"{target}: scheme {name} ({reason}); "
        + (", ".join(f"{f.path} {f.action}" for f in files) or "nothing to do")
    )
    for note in ctx.notes:
        emit(note)
    for w in ctx.warnings:
        emit(f"warning: {w}")
    return result
