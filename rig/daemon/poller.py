"""Polling mode, for rigs that cannot receive webhooks: look at the releases every N minutes.

A release found this way becomes the same job a `release` webhook would create
(same key), so running both modes at once never tests an image twice.
"""

from __future__ import annotations

import logging
import threading

from rig.daemon.github import GitHub
from rig.daemon.queue import Queue
from rig.daemon.settings import MARKER, DaemonSettings
from rig.daemon.webhooks import Ignored, job_request
from rig.errors import RigError

log = logging.getLogger(__name__)


def poll_once(settings: DaemonSettings, queue: Queue, gh: GitHub) -> list[int]:
    """Queue every untested release (marker present, or a draft); returns new job ids."""
    new = []
    for watch in settings.repos.values():
        if "release" not in watch.events:
            continue
        for release in gh.releases(watch.name):
            if MARKER not in (release.get("body") or "") and not release.get("draft"):
                continue
            payload = {
                "action": "created" if release.get("draft") else "published",
                "release": release,
                "repository": {"full_name": watch.name},
            }
            try:
                request = job_request("release", payload, settings)
            except Ignored as e:
                log.debug("poll: %s", e)
                continue
            outcome, job_id = queue.accept_delivery(
                f"poll:release:{release.get('id')}", "release", request
            )
            if outcome == "queued" and job_id is not None:
                log.info("poll: queued job %s for %s", job_id, request.title)
                new.append(job_id)
    return new


class Poller:
    def __init__(self, settings: DaemonSettings, queue: Queue, wake: threading.Event) -> None:
        self.settings = settings
        self.queue = queue
        self.wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.last_error = ""

    def lane(self) -> dict[str, object] | None:
        """Liveness for /healthz (None: polling is off)."""
        if self._thread is None:
            return None
        return {"alive": self._thread.is_alive(), "polls": self.polls, "error": self.last_error}

    def start(self) -> None:
        if not self.settings.poll_interval:
            return
        self._thread = threading.Thread(target=self._loop, name="rig-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _loop(self) -> None:
        interval = self.settings.poll_interval or 600.0
        while True:
            gh = GitHub(
                self.settings.api_url, self.settings.github_token, egress=self.settings.egress()
            )
            try:
                if poll_once(self.settings, self.queue, gh):
                    self.wake.set()
                self.last_error = ""
            except RigError as e:
                self.last_error = str(e)[:300]
                log.warning("poll failed: %s", e)
            except Exception as e:  # one odd answer never ends polling
                self.last_error = f"internal error: {e!r}"[:300]
                log.exception("poll failed")
            finally:
                self.polls += 1
                gh.close()
            if self._stop.wait(interval):
                return
