"""The composition root: a `Rig` built once from the config by the CLI and the daemon.

It is the one place that chooses the backend: the real machine (libusb, sysfs,
udev, downloads) or the virtual rig (its emulated bus and muxes, recipe-built
images, the supervisor of the virtual Pis). Everything else is handed the pieces
it builds: drivers (rig.hardware.build, by driver name), images, and the device
kit, whose ``write`` and ``provision`` are the same functions `rig flash` and
`rig provision` call. Nothing but this module, rig/virtual/ and `rig twin`
imports the virtual rig (tests/foundation/test_layers.py reads the imports).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from rig.config import RigConfig
from rig.events import StepLog
from rig.hardware.backend import REAL, HardwareBackend
from rig.hardware.protocols import CardMux, PowerSwitch


class Backend(Protocol):
    """What differs between a real rig and the virtual one, beyond the drivers' bus."""

    virtual: bool
    hardware: HardwareBackend

    def build_image(self, item: Any, log: StepLog) -> Path | None:
        """A catalogue image made here instead of downloaded (None: download it)."""

    def start(self) -> None:
        """Bring up what the devices need before a run (the virtual Pis' supervisor)."""

    def system_checks(self) -> list[Any]:
        """`rig doctor` findings about this machine for this backend."""


class RealBackend:
    """The flash host's own USB bus, sysfs and udev; images are downloaded."""

    virtual = False
    hardware = REAL

    def build_image(self, item: Any, log: StepLog) -> Path | None:
        return None

    def start(self) -> None:
        return None

    def system_checks(self) -> list[Any]:
        return []


class Rig:
    """The configured rig: its devices' drivers, images, card writes and provisioning."""

    def __init__(self, config: RigConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend

    @classmethod
    def from_config(cls, config: RigConfig) -> Rig:
        """The virtual backend when the config is the virtual rig, else the real one."""
        if config.virtual:
            from rig.virtual.backend import VirtualBackend

            return cls(config, VirtualBackend(config))
        return cls(config, RealBackend())

    @property
    def virtual(self) -> bool:
        return self.backend.virtual

    # --- drivers --------------------------------------------------------------

    def power(self, device: str) -> PowerSwitch:
        from rig.hardware.build import power_for

        return power_for(self.config, device, self.backend.hardware)

    def mux(self, device: str) -> CardMux:
        from rig.hardware.build import mux_for

        return mux_for(self.config, device, self.backend.hardware)

    def usb(self) -> Any:
        """The pyusb backend the drivers use (None: libusb), for `rig doctor`'s USB scan."""
        return self.backend.hardware.usb

    # --- images and cards -------------------------------------------------------

    def image(self, name: str | Path, log: StepLog | None = None, progress: Any = None) -> Path:
        """A path, catalogue name or URL as an image file (built, cached or downloaded)."""
        from rig.card.images import resolve_image

        return resolve_image(name, self.config, log, progress, build=self.backend.build_image)

    def write_card(
        self,
        device: str,
        image: Path,
        disk: Path,
        log: StepLog,
        *,
        mux: CardMux | None = None,
        verify: bool = True,
        progress: Any = None,
        bmap: Path | None = None,
        skip_same: bool = True,
    ) -> Any:
        """Write and verify the device's card, as `rig flash` and every run do.

        The card's identity (for the writer's per-card state) comes from the mux;
        a freshly written card boots with a new host key, so the old one is forgotten."""
        from rig.card.writer import write_image
        from rig.device.ssh import forget_host_key

        dev = self.config.device(device)
        mux = mux or self.mux(device)
        identity = mux.card_identity() if hasattr(mux, "card_identity") else None
        result = write_image(
            image,
            Path(disk),
            verify=verify,
            log=log,
            progress=progress,
            card_identity=identity or device,
            state_dir=self.config.paths.state,
            bmap=bmap,
            unpack_dir=self.config.paths.images / "unpacked",
            skip_same=skip_same,
        )
        forget_host_key(dev.host or f"{device}.local", dev.ssh_port)
        return result

    def provision_card(self, device: str | None, disk: Path, log: Any = None, **options: Any):
        """Wi-Fi, user, SSH and hostname onto the card's boot partition, from rig.yaml.

        ``options``: hostname, ssid, country, user overrides, and scheme / dry_run."""
        from rig.card.provision import ProvisionSettings, provision_card

        hostname = options.pop("hostname", None)
        overrides = {k: options.pop(k) for k in ("ssid", "country", "user") if k in options}
        settings = ProvisionSettings.from_config(self.config, device, hostname)
        if overrides:
            settings = settings.override(**overrides)
        return provision_card(disk, settings, log=log, **options)

    def kit(self, device: str, image: Path) -> Any:
        """Everything a scenario pipeline needs of one device."""
        from rig.hardware import sequences
        from rig.orchestration.pipeline import DeviceKit

        dev = self.config.device(device)
        power, mux = self.power(device), self.mux(device)

        def write(disk: Path, log: StepLog) -> dict[str, Any]:
            return _plain(self.write_card(device, image, disk, log, mux=mux))

        def provision(disk: Path, log: StepLog, hostname_on_root: bool = False) -> dict[str, Any]:
            return self.provision_card(
                device, disk, log, hostname_on_root=hostname_on_root
            ).summary()

        return DeviceKit(
            snapshots=self.snapshots(device, image, mux),
            name=device,
            power=power,
            mux=mux,
            host=dev.host or f"{device}.local",
            ssh_port=dev.ssh_port,
            to_host=lambda log: sequences.to_host(power, mux, log),
            to_dut=lambda log: sequences.to_dut(power, mux, log),
            write=write,
            provision=provision,
        )

    # --- starting-state snapshots ---------------------------------------------------

    def snapshots(self, device: str, image: Path, mux: CardMux | None = None) -> Any:
        """The device's view of the snapshot store for ``image`` (None: run.snapshots off).

        The key's rig-side inputs: the image file's hash, every provisioning input that
        the first boot puts into the root file system (not the hostname: that is written
        fresh with the host keys and machine id), the device model, the rig's source."""
        from rig.card.identity import refresh_identity
        from rig.card.provision import ProvisionSettings
        from rig.card.snapshots import CardSnapshots, rig_fingerprint, snapshot_settings
        from rig.device.ssh import learn_host_keys

        enabled, store = snapshot_settings(self.config)
        if not enabled:
            return None
        dev = self.config.device(device)
        settings = ProvisionSettings.from_config(self.config, device)

        def base() -> dict[str, Any]:
            return {
                "image": {"name": Path(image).name, "sha256": store.image_sha256(Path(image))},
                "provision": {
                    "scheme": settings.scheme,
                    "user": settings.user,
                    "password": store.secret(settings.password.reveal()),
                    "ssh_keys": sorted(settings.ssh_keys),
                    "ssid": settings.ssid,
                    "psk": store.secret(settings.psk.reveal()),
                    "country": settings.country,
                    "hidden": settings.hidden,
                    "config_txt": list(settings.config_txt),
                },
                "model": dev.model,
                "rig": rig_fingerprint(),
            }

        def write(snap_image: Path, bmap: Path, disk: Path, log: StepLog) -> dict[str, Any]:
            return _plain(self.write_card(device, snap_image, disk, log, mux=mux, bmap=bmap))

        def refresh(disk: Path, log: StepLog) -> dict[str, Any]:
            with log.step("fresh identity: SSH host keys, machine id, hostname"):
                ident = refresh_identity(disk, settings.hostname)
            learn_host_keys(dev.host or f"{device}.local", dev.ssh_port, ident.host_keys.values())
            log(
                f"hostname {ident.hostname}, machine id {ident.machine_id}, "
                f"host keys {', '.join(sorted(ident.host_keys)) or 'none on the card'}"
            )
            return {"hostname": ident.hostname, "host_keys": sorted(ident.host_keys.values())}

        return CardSnapshots(store, base, write, refresh)

    # --- the rest -----------------------------------------------------------------

    def start(self) -> None:
        self.backend.start()

    def system_checks(self) -> list[Any]:
        return self.backend.system_checks()


def _plain(obj: Any) -> dict[str, Any]:
    """A JSON-friendly summary of a result object for the report's facts."""
    try:
        data = asdict(obj)
    except TypeError:
        data = dict(vars(obj)) if hasattr(obj, "__dict__") else {"value": str(obj)}
    return {
        k: v if isinstance(v, int | float | str | bool | None) else str(v) for k, v in data.items()
    }
