"""Credentials in the open, secrets kept: rig.yaml's admin, the per-run password, the masking."""

from __future__ import annotations

import httpx
import pytest
import yaml

from rig.asgi import BackgroundServer
from rig.cli import main
from rig.config import load_config
from rig.errors import ConfigError, ValidationErrors
from rig.events import Event, EventBus, StepLog
from rig.orchestration.forward import TcpForward
from rig.orchestration.runner import credentials_for


def _config(tmp_path, monkeypatch, **data):
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"paths": {"state": str(tmp_path / "state")}, **data}))
    return load_config(path)


def test_admin_from_rig_yaml_as_a_secret(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RIG_SECRET_OP_ADMIN", "s3cret-from-env")
    config = _config(
        tmp_path, monkeypatch, admin={"name": "maker", "password": {"secret": "op_admin"}}
    )
    creds = credentials_for(config)
    assert (creds.admin_user, creds.admin_password) == ("maker", "s3cret-from-env")
    assert not creds.admin_generated
    assert "s3cret" not in repr(config.admin) and "s3cret" not in repr(creds)


def test_without_a_password_every_run_generates_one(tmp_path, monkeypatch) -> None:
    config = _config(tmp_path, monkeypatch)
    one, two = credentials_for(config), credentials_for(config)
    assert one.admin_user == "admin" and one.admin_generated
    assert one.admin_password != two.admin_password
    assert len(one.admin_password) >= 16
    assert one.admin_password != "rig-admin-password"
    assert one.device_user == "pi"


def test_a_missing_admin_secret_says_where(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RIG_SECRET_NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"admin\.password: secret 'nope' not found"):
        _config(tmp_path, monkeypatch, admin={"password": {"secret": "nope"}})


def test_a_bad_admin_name_is_located(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValidationErrors) as e:
        _config(tmp_path, monkeypatch, admin={"name": "no spaces", "pasword": "x"})
    text = str(e.value)
    assert "admin.name: 'no spaces'" in text
    assert "admin: unknown key(s) 'pasword'" in text


def test_the_event_bus_masks_secrets_for_every_subscriber() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    bus.redact("hunter2-xyz")
    log = StepLog(bus, device="pi3-a", scenario="s")
    log("$ octoprint user add admin --password hunter2-xyz", command="x hunter2-xyz", n=3)
    bus.emit(Event("log", "ok", data={"deep": {"list": ["a hunter2-xyz"]}}))
    assert seen[0].message == "$ octoprint user add admin --password ***"
    assert seen[0].data == {"command": "x ***", "n": 3}
    assert seen[-1].data == {"deep": {"list": ["a ***"]}}
    assert not any("hunter2" in repr(e) for e in seen)


def test_matrix_show_offers_rig_up_beside_rig_run(capsys) -> None:
    assert main(["matrix", "show", "matrix/demo.json", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "`rig run matrix/demo.json --scenario octopi-1.1.0-devel`" in out
    assert "`rig up matrix/demo.json --scenario octopi-1.1.0-devel`" in out


def test_the_forward_carries_http_to_a_device_only_this_host_reaches() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):
        return PlainTextResponse("device " + request.headers.get("host", ""))

    app = Starlette(routes=[Route("/", hello)])
    with BackgroundServer(app, "127.83.9.2", 0) as device:
        forward = TcpForward("127.83.9.1", device.host, device.port).start()
        try:
            with httpx.Client() as http:  # keep-alive: two requests on one connection
                for _ in range(2):
                    r = http.get(f"http://127.83.9.1:{forward.port}/")
                    assert r.text == f"device 127.83.9.1:{forward.port}"
        finally:
            forward.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.83.9.1:{forward.port}/", timeout=2)


def test_real_devices_are_never_provisioned_with_the_public_builtin_user(
    tmp_path, monkeypatch
) -> None:
    from rig.config import VIRTUAL_CONFIG
    from rig.orchestration.matrix import load_matrix
    from rig.orchestration.runner import Runner, RunOptions
    from rig.root import Rig

    config = _config(tmp_path, monkeypatch, devices=VIRTUAL_CONFIG["devices"])  # no virtual:
    assert not config.virtual and config.user.builtin
    runner = Runner(
        config, load_matrix("matrix/demo.json"), RunOptions(), rig=Rig.from_config(config)
    )
    with pytest.raises(ConfigError, match="built-in one's password is public") as e:
        runner.run()
    assert e.value.where.endswith("rig.yaml: user")
    assert not (tmp_path / "state" / "rig.db").exists() or not runner.held
    own = _config(
        tmp_path,
        monkeypatch,
        devices=VIRTUAL_CONFIG["devices"],
        user={"name": "pi", "password": "x" * 9},
    )
    assert not own.user.builtin
