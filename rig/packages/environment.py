"""Which Python and platform a pip client runs on, read from the User-Agent pip sends.

pip puts a JSON object of its interpreter, CPU, distribution and C library after
``pip/<version>`` (pip/_internal/network/session.py, ``user_agent``). A wheel a
device built is kept under the key of that object and offered only to a pip whose
key is the same: same implementation and Python minor version, CPU, distribution
release and C library. Stricter than the wheel's tags on purpose: a
``linux_armv7l`` wheel links against the libraries of the distribution it was
built on, which its tag does not say.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

PIP_AGENT = re.compile(r"^pip/\S+ (\{.*\})\s*$")


@dataclass(frozen=True)
class Environment:
    implementation: str  # CPython
    python: str  # major.minor
    cpu: str  # platform.machine(): armv7l, aarch64, x86_64
    distro: str  # name and version: "Debian GNU/Linux 12"
    libc: str  # "glibc 2.36"

    @property
    def key(self) -> str:
        """A directory name: readable, with a digest of all fields so two never collide."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        slug = re.sub(r"[^a-z0-9.]+", "-", f"{self.implementation}{self.python}-{self.cpu}".lower())
        return f"{slug}-{digest[:12]}"


def from_user_agent(agent: str | None) -> Environment | None:
    """The environment a pip User-Agent describes; None for anything else (no wheels
    a device built are offered to a client that does not say what it runs on)."""
    m = PIP_AGENT.match(agent or "")
    if not m:
        return None
    try:
        data = json.loads(m.group(1))
    except ValueError:
        return None
    impl = data.get("implementation") or {}
    version = str(impl.get("version") or data.get("python") or "")
    distro = data.get("distro") or {}
    libc = distro.get("libc") or {}
    parts = version.split(".")
    if not impl.get("name") or len(parts) < 2 or not data.get("cpu"):
        return None
    return Environment(
        implementation=str(impl["name"]),
        python=".".join(parts[:2]),
        cpu=str(data["cpu"]),
        distro=f"{distro.get('name', '')} {distro.get('version', '')}".strip(),
        libc=f"{libc.get('lib', '')} {libc.get('version', '')}".strip(),
    )


# Run with the device's Python: the User-Agent its pip sends (pip's own function, so
# the key is computed exactly as for the requests the index answers).
USER_AGENT_SCRIPT = "from pip._internal.network.session import user_agent; print(user_agent())"
