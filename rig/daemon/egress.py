"""Where the daemon may connect: the token only to the API's origin, images only from allowed
hosts, and nothing inside the flash host's own networks unless the operator named it.

A dispatched ``image_url`` is attacker-shaped input (anyone who can trigger the
workflow chooses it): without these rules the daemon would fetch any URL with
the rig's network position (SSRF) and, on a look-alike host, with the token.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import httpx

from rig.errors import InfraError

# where github.com's release assets and artifact zips are served from (redirect targets)
GITHUB_IMAGE_HOSTS = (
    "github.com",
    "objects.githubusercontent.com",
    "release-assets.githubusercontent.com",
)


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in: what "same server" means."""
    u = httpx.URL(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme, 0)
    return u.scheme, (u.host or "").lower().rstrip("."), port


def host_port(url: str | httpx.URL) -> str:
    _, host, port = origin(url)
    return f"{host}:{port}"


def host_allowed(url: str, allowed: Iterable[str]) -> bool:
    """``allowed`` holds host names (any port) or ``host:port`` entries."""
    _, host, port = origin(url)
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry == host or entry == f"{host}:{port}":
            return True
    return False


def _internal(address: str) -> str | None:
    """Why an address belongs to the flash host's own side, or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for what in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{what}"):
            return what.replace("_", "-")
    return None if ip.is_global else "non-global"


class Egress:
    """The connection rules of one daemon; ``check`` runs before every request and redirect."""

    def __init__(self, api_url: str, private_hosts: Iterable[str] = ()) -> None:
        self.api = origin(api_url)
        self.private_hosts = tuple(private_hosts)

    def is_api(self, url: str | httpx.URL) -> bool:
        return origin(url) == self.api

    def check(self, url: str | httpx.URL) -> None:
        """Refuse a target that resolves into loopback, private or link-local space."""
        if self.is_api(url) or host_allowed(str(url), self.private_hosts):
            return  # configured by the operator: github.api_url, github.private_hosts
        scheme, host, port = origin(url)
        if scheme not in ("http", "https"):
            raise InfraError(f"refused to fetch a {scheme or 'relative'} URL", where="image_url")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise InfraError(f"cannot resolve {host}", where="image_url") from None
        for info in infos:
            why = _internal(str(info[4][0]))
            if why:
                raise InfraError(
                    f"refused to fetch from {host}: it resolves to a {why} address",
                    where="image_url",
                    hint="a LAN mirror must be listed in github.private_hosts",
                )

    def hook(self, request: httpx.Request) -> None:
        """httpx request hook: the first request and every redirect pass through here."""
        self.check(request.url)
