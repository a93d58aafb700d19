"""The environment the daemon's children get: what they need to run, none of the daemon's keys.

The acceptance run installs with pip and npm and starts Chromium; the publish
command is whatever the operator configured. Neither needs the webhook secret,
the GitHub token, the SMTP password or the approval key, and none of them gets
``$CREDENTIALS_DIRECTORY`` or ``$NOTIFY_SOCKET``: a child (or a package's install
script running inside it) cannot read what it is not given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from rig.config import SECRET_ENV_PREFIX
from rig.product import PRODUCT_ENVIRONMENT

# what a process needs to find its tools, its locale, its proxy and its display
PASS = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "VIRTUAL_ENV",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "NODE_EXTRA_CA_CERTS",
    "npm_config_registry",
    "PLAYWRIGHT_BROWSERS_PATH",
    "RIG_CHROMIUM",
    "RIG_TEST_NET",
)


def child_env(
    extra: Mapping[str, str] = (),  # type: ignore[assignment]
    *,
    passthrough: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A minimal environment: :data:`PASS`, ``LC_*``, the operator's ``passthrough``
    names (never a ``$RIG_SECRET_*``), then ``extra``."""
    environ = os.environ if environ is None else environ
    keep = (set(PASS) | set(PRODUCT_ENVIRONMENT) | set(passthrough)) - {
        "CREDENTIALS_DIRECTORY",
        "NOTIFY_SOCKET",
    }
    env = {
        k: v
        for k, v in environ.items()
        if (k in keep or k.startswith("LC_")) and not k.startswith(SECRET_ENV_PREFIX)
    }
    env.update(extra)
    return env
