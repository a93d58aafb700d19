"""Pieces every scheme shares: the card view, the change record, PSK and password
hashing, the quoting rules of each file format, and the config.txt / cmdline.txt edits.

Quoting policy (no value is ever pasted into a format unescaped):

- wpa_supplicant: the SSID in quotes only when it is plain printable ASCII
  without ``"`` or ``\\``, otherwise as hex bytes (``ssid=6d79...``); the PSK
  always as the 64-hex PBKDF2 key, as Raspberry Pi Imager writes it, so the
  passphrase is not on the card in clear.
- NetworkManager keyfile: the SSID as a plain string when it is safe for
  GKeyFile, otherwise as the byte list form (``ssid=104;105;``); PSK as hex key.
- shell (firstrun.sh): values only ever inside single quotes (``'`` becomes
  ``'\\''``); whole files are embedded as quoted here-documents, never expanded.
- TOML and YAML: basic / double-quoted strings with every backslash, quote and
  non-printable character escaped.

SHA-512 crypt: ``libpass`` (the maintained fork of passlib; it imports as
``passlib``) -- a vetted implementation that works on Python 3.11 and 3.13,
where the ``crypt`` module is gone; pure Python, so it installs on the Pi.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from passlib.hash import sha512_crypt

from rig.card.fat import FatVolume
from rig.errors import ConfigError

from .rootfs import read_root_file
from .settings import ProvisionSettings

BEGIN = "# --- rig provision: begin (rewritten on every provisioning) ---"
END = "# --- rig provision: end ---"
SHA512_RE = re.compile(r"\$6\$(?:rounds=\d+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}")
FIRSTRUN_TOKENS = (
    "systemd.run=",
    "systemd.run_success_action=",
    "systemd.unit=kernel-command-line.target",
    "cfg80211.ieee80211_regdom=",
    "ds=nocloud",
)


@dataclass(frozen=True)
class FileChange:
    """One file to write (content) or remove (content None) on the boot partition."""

    path: str
    content: bytes | None
    secrets: tuple[str, ...] = ()  # substrings to mask when shown
    note: str = ""


class CardView:
    """Read access to the boot partition for the schemes (they never write)."""

    def __init__(self, vol: FatVolume) -> None:
        self.vol = vol
        self._names = {e.name.casefold(): e.name for e in vol.listdir("/")}

    def exists(self, name: str) -> bool:
        return name.casefold() in self._names

    def read(self, name: str) -> bytes | None:
        return self.vol.read(name) if self.exists(name) else None

    def text(self, name: str) -> str | None:
        data = self.read(name)
        return None if data is None else data.decode("utf-8", "replace")

    @property
    def names(self) -> list[str]:
        return sorted(self._names.values())

    def root_text(self, path: str) -> str | None:
        """A small file of the root partition (ext4), or None when it cannot be read."""
        data = read_root_file(self.vol.file, path)
        return None if data is None else data.decode("utf-8", "replace")


@dataclass
class Context:
    """What a scheme sees: the settings, the card (read-only), derived secrets, warnings."""

    settings: ProvisionSettings
    card: CardView
    warnings: list[str] = field(default_factory=list)
    hostname_on_root: bool = False  # the root file system already has the hostname (snapshot)
    notes: list[str] = field(default_factory=list)
    _hash: str | None = field(default=None, init=False)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def psk_hex(self) -> str:
        return wpa_psk(self.settings.ssid, self.settings.psk.reveal())

    @property
    def password_hash(self) -> str:
        """SHA-512 crypt of the password; an existing hash on the card that matches is reused,
        so re-provisioning with the same settings writes identical bytes."""
        if self._hash is None:
            self._hash = existing_hash(self.card, self.settings.password.reveal()) or (
                sha512_crypt.using(rounds=5000).hash(self.settings.password.reveal())
            )
        return self._hash


def wpa_psk(ssid: str, psk: str) -> str:
    """The 64-hex WPA key: as given, or PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32)."""
    if re.fullmatch(r"[0-9A-Fa-f]{64}", psk):
        return psk.lower()
    return hashlib.pbkdf2_hmac("sha1", psk.encode("ascii"), ssid.encode("utf-8"), 4096, 32).hex()


def existing_hash(card: CardView, password: str) -> str | None:
    for name in ("userconf.txt", "firstrun.sh", "custom.toml", "user-data"):
        text = card.text(name)
        if not text:
            continue
        for found in SHA512_RE.findall(text):
            try:
                if sha512_crypt.verify(password, found):
                    return found
            except ValueError:
                continue
    return None


# --- quoting, one function per format ----------------------------------------


def _plain_ascii(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E for c in text)


def wpa_ssid(ssid: str) -> str:
    """The value after ``ssid=`` in wpa_supplicant.conf."""
    if _plain_ascii(ssid) and '"' not in ssid and "\\" not in ssid:
        return f'"{ssid}"'
    return ssid.encode("utf-8").hex()


def keyfile_ssid(ssid: str) -> str:
    """The value after ``ssid=`` in a NetworkManager keyfile: the text itself (UTF-8) unless
    GKeyFile or NetworkManager would read it differently (backslash escapes, ``;`` lists,
    trimmed blanks); then the byte list form ``ssid=104;105;``."""
    if ssid.isprintable() and not any(c in ssid for c in "\\;") and ssid == ssid.strip():
        return ssid
    return "".join(f"{b};" for b in ssid.encode("utf-8"))


def shell_quote(text: str) -> str:
    """A single-quoted shell word: nothing inside is expanded."""
    return "'" + text.replace("'", "'\\''") + "'"


def _escape(text: str) -> str:
    out = []
    for c in text:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif 0x20 <= o <= 0x7E:
            out.append(c)
        elif o < 0x20 or 0x7F <= o < 0xA0 or c in "\u2028\u2029\ufeff" or not c.isprintable():
            out.append(f"\\u{o:04X}" if o <= 0xFFFF else f"\\U{o:08X}")
        else:
            out.append(c)  # printable non-ASCII: written as UTF-8
    return '"' + "".join(out) + '"'


def toml_str(text: str) -> str:
    """A TOML basic string."""
    return _escape(text)


def yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (valid for YAML 1.1 and 1.2 readers)."""
    return _escape(text)


# --- edits of files the image ships -------------------------------------------


def replace_block(text: str, block: list[str], *, before: str | None = None) -> str:
    """`text` with our marked block replaced (or inserted before the line starting with
    `before`, else appended). Everything outside the markers is kept as it was."""
    lines = text.splitlines()
    kept: list[str] = []
    inside = False
    insert_at: int | None = None
    for line in lines:
        if line.strip() == BEGIN:
            inside = True
            insert_at = len(kept)
            continue
        if inside:
            if line.strip() == END:
                inside = False
            continue
        kept.append(line)
    new = [BEGIN, *block, END]
    if insert_at is None and before is not None:
        for i, line in enumerate(kept):
            if line.startswith(before):
                insert_at = i
                new.append("")  # first insertion: keep a blank line before the trailer
                break
    if insert_at is None:
        while kept and not kept[-1].strip():
            kept.pop()
        kept += ["", *new] if kept else new
    else:
        kept[insert_at:insert_at] = new
    return "\n".join(kept) + "\n"


def config_txt_change(card: CardView, settings: ProvisionSettings) -> FileChange | None:
    """Our config.txt lines in a marked block under [all] (idempotent); None when nothing to do."""
    text = card.text("config.txt")
    if not settings.config_txt:
        if text is None or BEGIN not in text:
            return None
        lines = [x for x in replace_block(text, []).splitlines() if x not in (BEGIN, END)]
        return FileChange("config.txt", ("\n".join(lines).rstrip("\n") + "\n").encode())
    if text is None:
        raise ConfigError(
            "the boot partition has no config.txt; is this a Raspberry Pi image?",
            where=settings.where("config_txt"),
        )
    block = ["[all]", *settings.config_txt]
    return FileChange("config.txt", replace_block(text, block).encode(), note="extra lines")


def cmdline_line(card: CardView) -> str:
    """The single line of cmdline.txt without our first-boot suffix; must keep root=."""
    text = card.text("cmdline.txt")
    if text is None:
        raise ConfigError("the boot partition has no cmdline.txt", where="cmdline.txt")
    lines = [x for x in text.splitlines() if x.strip()]
    if not lines:
        raise ConfigError("cmdline.txt is empty", where="cmdline.txt")
    words = [w for w in lines[0].split() if not w.startswith(FIRSTRUN_TOKENS)]
    if not any(w.startswith("root=") for w in words):
        raise ConfigError(
            "cmdline.txt has no root= parameter; refusing to edit it",
            where="cmdline.txt",
            hint="write a complete Raspberry Pi OS / OctoPi image first",
        )
    return " ".join(words)


def userconf_change(ctx: Context) -> FileChange:
    line = f"{ctx.settings.user}:{ctx.password_hash}\n"
    return FileChange("userconf.txt", line.encode(), (ctx.password_hash,), "first user")


def octopi_hostname_change(ctx: Context) -> FileChange | None:
    """OctoPi's ``octopi-hostname.txt``, unless the root already has the name: its
    change_hostname (guysoft/OctoPi, etc/init.d/change_hostname) reboots whenever the file
    exists, the same name or not, and on a Pi 3 that is a boot for nothing."""
    name = ctx.settings.hostname
    if ctx.hostname_on_root:
        ctx.notes.append(f"no octopi-hostname.txt: the root file system already says {name}")
        return None
    return FileChange("octopi-hostname.txt", f"{name}\n".encode(), note="hostname")


def ssh_change() -> FileChange:
    return FileChange("ssh", b"", note="enable sshd")
