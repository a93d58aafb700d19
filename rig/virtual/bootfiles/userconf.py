"""userconf.txt: one line ``user:crypt-hash`` that sets the first user at boot."""

from __future__ import annotations

import re

from rig.virtual.bootfiles import BootFileError

NAME = re.compile(r"[a-z][a-z0-9-]*")
RESERVED = {
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "nobody",
    "sshd",
    "messagebus",
    "systemd-network",
    "systemd-timesync",
    "avahi",
    "polkitd",
}


def parse_userconf(text: str) -> tuple[str, str]:
    """(name, hash); BootFileError for what userconf rejects."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise BootFileError("userconf.txt must hold exactly one line user:hash")
    name, sep, pw = lines[0].strip().partition(":")
    if not sep or not name or not pw:
        raise BootFileError("userconf.txt: expected user:hash")
    if len(name) > 32 or not NAME.fullmatch(name) or name in RESERVED:
        raise BootFileError(f"userconf.txt: invalid user name {name!r}")
    # userconf hands the second field to `chpasswd -e`, which stores whatever it
    # gets: a plain-text password is "accepted" and then matches no password.
    return name, pw


def check_password(hash_: str, password: str) -> bool:
    """Does ``password`` match the crypt hash (SHA-512 ``$6$``, SHA-256 ``$5$``, MD5 ``$1$``)?"""
    from passlib.hash import md5_crypt, sha256_crypt, sha512_crypt

    for scheme in (sha512_crypt, sha256_crypt, md5_crypt):
        if scheme.identify(hash_):
            try:
                return bool(scheme.verify(password, hash_))
            except ValueError:
                return False
    return False
