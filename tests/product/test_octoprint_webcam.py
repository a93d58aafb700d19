"""The webcam snapshot in the smoke check (issue 13, 10b), on a real OctoPrint 1.11.8.

OctoPrint's default snapshot URL is empty (classicwebcam); OctoPi's images set one
with their camera stack. The rig fetches it on the device, where OctoPrint does.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from rig.errors import ProductError

# the smallest JFIF a decoder accepts is not needed: the markers are what is checked
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\x00" * 64 + b"\xff\xd9"


class _Camera(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if "action=snapshot" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)
        else:
            self.send_error(404, "no such stream")

    def log_message(self, *args):
        pass


@pytest.fixture
def camera():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _set_snapshot(rig, ctx, url: str) -> None:
    api = rig.profile.api(ctx)
    try:
        api.login()  # the session and its CSRF cookie, as a browser has them
        r = api.request(
            "POST", "/api/settings", json={"plugins": {"classicwebcam": {"snapshot": url}}}
        )
        assert r.status_code == 200, r.text
    finally:
        api.close()


def test_webcam_snapshot_skipped_with_reason_fetched_when_configured(plugin_rig, camera):
    rig = plugin_rig
    ctx = rig.ctx(start_version=None, scenario_id="webcam")
    rig.profile.prepare(ctx)
    _set_snapshot(rig, ctx, "")
    result = rig.profile.webcam_snapshot(ctx)
    assert result == {
        "outcome": "skipped",
        "reason": "no snapshot URL configured: the image has no camera stack",
    }
    assert json.loads((rig.results / "smoke" / "webcam.json").read_text())["outcome"] == "skipped"

    _set_snapshot(rig, ctx, f"{camera}/?action=snapshot")
    result = rig.profile.webcam_snapshot(ctx)
    assert (result["outcome"], result["status"], result["content_type"]) == (
        "ok",
        200,
        "image/jpeg",
    )
    assert result["bytes"] == len(JPEG)

    # OctoPi's URL with no camera attached: its streamer does not listen (the discard port)
    _set_snapshot(rig, ctx, "http://127.0.0.1:9/?action=snapshot")
    result = rig.profile.webcam_snapshot(ctx)
    assert result["outcome"] == "skipped" and "no camera attached" in result["reason"]

    _set_snapshot(rig, ctx, f"{camera}/?action=stream")  # a camera that answers 404
    with pytest.raises(ProductError, match=r"webcam snapshot .*404"):
        rig.profile.webcam_snapshot(ctx)
    assert ctx.facts["webcam"]["outcome"] == "failed"
