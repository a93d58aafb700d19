"""Every device's state as plain data: the one view `rig devices` and the dashboard show.

Hardware (power, mux side, card, disk) is read through the drivers the
composition root (rig.root.Rig) builds; lease,
quarantine and health come from the leases module, the last result from the
results store. A value that could not be read is None and ``errors`` says why,
so one broken hub never hides the other devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rig.config import RigConfig
from rig.errors import RigError
from rig.orchestration import results
from rig.orchestration.leases import Leases


class Drivers(Protocol):
    """What the view needs of the composition root (rig.root.Rig): each device's drivers."""

    def power(self, device: str) -> Any: ...

    def mux(self, device: str) -> Any: ...


def _try(errors: dict[str, str], key: str, fn: Callable[[], Any]) -> Any:
    """A failing read becomes errors[key], never the end of the listing."""
    try:
        return fn()
    except RigError as e:
        errors[key] = e.message.strip()
    except OSError as e:  # a driver's I/O that no RigError wrapped
        errors[key] = f"{e.strerror or e}"
    return None


def _hardware(drivers: Drivers, name: str, errors: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"power": None, "mux": None, "card": None, "disk": None}
    power = _try(errors, "power", lambda: drivers.power(name))
    if power is not None:
        on = _try(errors, "power", power.state)
        out["power"] = None if on is None else "on" if on else "off"
    mux = _try(errors, "mux", lambda: drivers.mux(name))
    if mux is not None:
        out["mux"] = _try(errors, "mux", mux.state)
        if out["mux"] == "host":
            out["card"] = _try(errors, "card", mux.card_identity)
            finder = getattr(mux, "disks", None)
            disk = _try(errors, "disk", finder.find) if finder else None
            out["disk"] = str(disk) if disk else None
    return out


def _store(config: RigConfig, name: str, leases: Leases) -> dict[str, Any]:
    row = leases.health(name)
    why = leases.quarantined(name)
    held = leases.holder_of(name)
    last_run = results.last_on_device(config.paths.state, name)
    return {
        "health": "quarantined" if why else "ok",
        "quarantine_reason": why,
        "infra_failures": row["infra_failures"] if row else 0,
        "lease": {"purpose": held.purpose, "pid": held.pid, "host": held.host} if held else None,
        "last_result": (
            {"outcome": row["last_result"], "scenario": row["last_scenario"]}
            if row and row["last_result"]
            else None
        ),
        "last_run": (
            {
                "run": last_run.run_id,
                "scenario": last_run.scenario,
                "outcome": last_run.outcome,
                "finished": last_run.finished,
                "report": last_run.report,
            }
            if last_run
            else None
        ),
    }


def devices_view(
    config: RigConfig,
    drivers: Drivers | None,
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Each device (all of rig.yaml's, or ``names``) as data, in rig.yaml's order.

    ``drivers=None`` leaves power, mux, card and disk None without touching a
    driver (a page that refreshes every few seconds must not race a run's switching).
    """
    wanted = list(config.devices) if names is None else names
    leases = Leases(config.paths.state)
    try:
        views = []
        for name in wanted:
            dev = config.device(name)
            errors: dict[str, str] = {}
            view: dict[str, Any] = {"name": name, "model": dev.model}
            if drivers is not None:
                view.update(_hardware(drivers, name, errors))
            else:
                view.update({"power": None, "mux": None, "card": None, "disk": None})
            view.update(_store(config, name, leases))
            view["errors"] = errors
            views.append(view)
        return views
    finally:
        leases.close()
