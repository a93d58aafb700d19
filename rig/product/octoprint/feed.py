"""The release feed: what the devices' release check sees instead of GitHub.

The injection plugin on each device points OctoPrint's ``github_release`` check
at ``{feed}/releases/{user}/{repo}?series=N``; we answer with the one release
under test, shaped like GitHub's API (only the fields OctoPrint reads). The
software-update plugin's check overlay (``/overlay.json``) is the real one the
devices would fetch from plugins.octoprint.org, so its changes to the checks
apply as in the field; the other things bundled plugins fetch (plugin repository
and notices, the Python end-of-life table) are answered empty, so devices never
reach for the internet and log no errors about it: "no new ERROR lines" stays
meaningful.
The bundled plugins' releases a matrix names (`PluginRelease`) are served under the
repository each plugin's own check asks for (as the check overlay leaves it); other
repositories get an empty list.
Everything else is 404: the rig has no business proxying other traffic.

``rig run`` serves `feed_app` with uvicorn; the daemon can mount it as a route.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rig.asgi import BackgroundServer
from rig.errors import ConfigError
from rig.product.octoprint.channels import published_commitish

REPOS = {"octoprint"}  # repo names (any user: foosel/OctoPrint, OctoPrint/OctoPrint)


@dataclass(frozen=True)
class InjectedRelease:
    version: str  # tag name, e.g. 1.11.0rc3
    channel: str  # stable | maintenance | devel | next
    name: str | None = None
    # published exactly under these (a mis-targeted release); default: the channel's rules
    commitish: tuple[str, ...] = ()
    published_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    def as_github(self, device_series: int = 1) -> list[dict]:
        """The entries of GitHub's release list for this release, as OctoPrint filters them:
        one per commitish it is published under (see `channels.published_commitish`)."""
        prerelease = self.channel != "stable" or Version(self.version).is_prerelease
        return [
            {
                "tag_name": self.version,
                "name": self.name or self.version,
                "prerelease": prerelease,
                "draft": False,
                "target_commitish": commitish,
                "published_at": self.published_at,
                "html_url": f"https://github.com/OctoPrint/OctoPrint/releases/tag/{self.version}",
            }
            for commitish in self.commitish
            or published_commitish(self.channel, device_series, self.version)
        ]


# The bundled plugins' own update checks (their get_update_information): check key ->
# (GitHub repository, stable branch, package on PyPI). FileCheck and FirmwareCheck
# release from master, PiSupport from main; all three offer stable releases only there.
BUNDLED_PLUGINS: dict[str, tuple[str, str, str]] = {
    "file_check": ("OctoPrint/OctoPrint-FileCheck", "master", "OctoPrint-FileCheck"),
    "firmware_check": ("OctoPrint/OctoPrint-FirmwareCheck", "master", "OctoPrint-FirmwareCheck"),
    "pi_support": ("OctoPrint/OctoPrint-PiSupport", "main", "OctoPrint-PiSupport"),
}


@dataclass(frozen=True)
class PluginRelease:
    """A release of a bundled plugin, published under the repository its check asks."""

    key: str  # the plugin's check key: file_check | firmware_check | pi_support
    version: str  # tag name, e.g. 2025.7.23
    published_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    def __post_init__(self) -> None:
        if self.key not in BUNDLED_PLUGINS:
            raise ConfigError(
                f"no bundled plugin {self.key!r} to inject a release of",
                where="release.plugins",
                hint="one of " + ", ".join(sorted(BUNDLED_PLUGINS)),
            )
        try:
            Version(self.version)
        except InvalidVersion:
            raise ConfigError(
                f"{self.key}: {self.version!r} is not a version", where="release.plugins"
            ) from None

    @property
    def repo(self) -> str:
        return BUNDLED_PLUGINS[self.key][0]

    def repo_under(self, overlay: dict) -> str:
        """The repository the device asks for this plugin: its own check's, unless the
        check overlay gives the check another user or repo (a plugin that moved)."""
        user, repo = self.repo.split("/")
        entry = overlay.get(self.key) if isinstance(overlay.get(self.key), dict) else {}
        return f"{entry.get('user', user)}/{entry.get('repo', repo)}"

    @property
    def package(self) -> str:
        return BUNDLED_PLUGINS[self.key][2]

    def as_github(self) -> list[dict]:
        return [
            {
                "tag_name": self.version,
                "name": self.version,
                "prerelease": False,
                "draft": False,
                "target_commitish": BUNDLED_PLUGINS[self.key][1],
                "published_at": self.published_at,
                "html_url": f"https://github.com/{self.repo}/releases/tag/{self.version}",
            }
        ]


def feed_app(
    release: InjectedRelease, overlay: dict | None = None, plugins: tuple[PluginRelease, ...] = ()
) -> Starlette:
    """The feed as an ASGI app.

    ``app.state.release`` is the injected release (replace it to inject another);
    ``app.state.overlay`` the software update check overlay the devices apply (the
    real one from plugins.octoprint.org, see `overlay.check_overlay`);
    ``app.state.plugins`` the bundled plugins' releases, each under its repository;
    ``app.state.requests`` lists the paths devices asked for.
    """

    async def releases(request: Request) -> JSONResponse:
        user, repo = request.path_params["user"], request.path_params["repo"]
        request.app.state.requests.append(request.url.path)
        for plugin in request.app.state.plugins:
            if plugin.repo_under(request.app.state.overlay).lower() == f"{user}/{repo}".lower():
                return JSONResponse(plugin.as_github())
        if repo.lower() not in REPOS:
            return JSONResponse([])
        try:
            device_series = int(request.query_params.get("series", "1"))
        except ValueError:
            device_series = 1
        return JSONResponse(request.app.state.release.as_github(device_series))

    def empty(value: list | dict) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def answer(request: Request) -> JSONResponse:
            request.app.state.requests.append(request.url.path)
            return JSONResponse(value)

        return answer

    async def overlay_json(request: Request) -> JSONResponse:
        request.app.state.requests.append(request.url.path)
        return JSONResponse(request.app.state.overlay)

    async def health(request: Request) -> JSONResponse:
        current = request.app.state.release
        return JSONResponse({"release": current.version, "channel": current.channel})

    app = Starlette(
        routes=[
            Route("/releases/{user}/{repo}", releases),
            Route("/overlay.json", overlay_json),
            Route("/plugins.json", empty([])),
            Route("/notices.json", empty([])),
            Route("/python-eol", empty({})),
            Route("/", health),
        ]
    )
    app.state.requests = []
    app.state.release = release
    app.state.plugins = tuple(plugins)
    app.state.overlay = dict(overlay or {})
    return app


class FeedServer(BackgroundServer):
    """The feed served in a thread (what ``rig run`` does for its devices)."""

    def __init__(
        self,
        release: InjectedRelease,
        host: str = "127.0.0.1",
        port: int = 0,
        overlay: dict | None = None,
        plugins: tuple[PluginRelease, ...] = (),
    ) -> None:
        super().__init__(feed_app(release, overlay, plugins), host, port)
