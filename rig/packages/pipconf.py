"""The pip.conf that points a device's pip at the rig's index, for a while.

pip reads, lowest to highest: /etc/xdg/pip/pip.conf, /etc/pip.conf, the user's
~/.config/pip/pip.conf, then ``<sys.prefix>/pip.conf`` of the environment it runs
in (pip's docs, "Configuration": config file locations; environment variables
override them all). The rig writes the last one, in the product's virtualenv,
so every pip of that environment (the rig's pin and the product's own updater)
uses it, without root and without touching the files the user's image ships.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MARKER = "# written by rig: its package cache for this scenario; removed after the update"


def pip_conf(index_url: str) -> str:
    """The file: the index, no extra indexes (every download goes through the cache,
    which proxies the rig's upstreams), and the index trusted when it is plain HTTP on
    the rig's LAN address (pip trusts only loopback over HTTP by itself)."""
    parts = urlsplit(index_url)
    lines = [MARKER, "[global]", f"index-url = {index_url}", "extra-index-url ="]
    if parts.scheme == "http" and parts.netloc:
        lines.append(f"trusted-host = {parts.netloc}")
    return "\n".join(lines) + "\n"


def is_ours(text: str | None) -> bool:
    """A pip.conf the rig wrote (removing it restores the user's view)."""
    return bool(text) and text.startswith(MARKER)
