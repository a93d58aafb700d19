"""Timing and faults of the virtual Pis, from the ``virtual:`` section of rig.yaml.

Keys (all optional)::

    virtual:
      boot_delay: 1.0            # seconds from power on (card on the DUT side) to sshd/OctoPrint
      first_boot_reboot: false   # the first boot reboots as the real one does (resize,
                                 # firstrun.sh: BootOutcome.reboots, at least 1): +boot_delay each
      profile: fast              # fast | pi3: pi3 makes each virtual Pi as slow as a Pi 3
                                 # (cgroups: rig.virtual.pi3, rig.virtual.throttle)
      time_scale: 1              # pi3 only: N times faster than a Pi 3 (rates x N, delays / N)
      pi3_core: 0.13             # pi3 only: one Pi 3 core as a share of one host core
                                 # (default: calibrated with sysbench)
      access_point: {ssid: ..., psk: ..., country: DE}   # the virtual Wi-Fi; default: `wifi:`
      card_size: 2147483648      # bytes per virtual card (read by the virtual hardware)
      card_sizes: {pi3-c: 1073741824}   # one device's card of another size
      faults:
        pi3-b:
          never_boots: true          # powered, card in place, nothing ever answers
          wifi_drops_after: 30       # s after each boot: SSH and HTTP go away, OctoPrint runs on
          power_glitch_after: 20     # seconds after each boot: a brown-out, the device reboots
          write_error_at: 1048576    # byte offset where host-side writes fail (virtual hardware)
          slow_start: 30             # s OctoPrint's start-up plugins take after the server answers
                                     # (a Pi 3): a stop in that window leaves .incomplete_startup
          undervoltage: true         # the power supply sags: `vcgencmd get_throttled` says
                                     # 0x50005, which OctoPrint's Pi support reads
          reboot_after_up: 5         # first boot of a card: sshd comes up, then the device
                                     # reboots once, N s later (OctoPi's hostname change);
                                     # `systemctl is-system-running` says starting/stopping

Defaults are fast (a boot takes about a second plus OctoPrint's start), so
tests and newcomers see results quickly. The ``pi3`` profile throttles CPU,
memory and card I/O to a Pi 3's and boots as slowly as one: its own delays
(boot, the first boot's reboot) are Pi 3 seconds divided by ``time_scale``;
numbers set here (``boot_delay``, the faults) are wall seconds in any profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rig.errors import ConfigError

PROFILES = ("fast", "pi3")

# seconds per phase: (low, high). pi3 from real devices (boot 45-90 s, first
# boot with resize and reboot 3-5 min, OctoPrint 1.x start on a Pi 3, an
# update through pip on a Pi 3); fast is what the virtual rig does here.
_DURATIONS: dict[str, dict[str, tuple[float, float]]] = {
    "pi3": {
        "power_off": (3.0, 3.0),
        "write": (120.0, 300.0),  # ~2.5 GB image to an SD card through the mux
        "first_boot": (180.0, 300.0),
        "boot": (45.0, 90.0),
        "octoprint_start": (30.0, 60.0),
        "update": (120.0, 600.0),
        "restart": (30.0, 60.0),
    },
    "fast": {
        "power_off": (0.2, 0.2),
        "write": (2.0, 10.0),
        "first_boot": (2.0, 40.0),  # the first boot of a version builds its venv once
        "boot": (1.0, 2.0),
        "octoprint_start": (3.0, 6.0),
        "update": (10.0, 30.0),
        "restart": (3.0, 6.0),
    },
}


@dataclass(frozen=True)
class DeviceFaults:
    never_boots: bool = False
    wifi_drops_after: float | None = None
    power_glitch_after: float | None = None
    write_error_at: int | None = None  # applied by the virtual hardware, listed for completeness
    slow_start: float | None = None
    undervoltage: bool = False
    reboot_after_up: float | None = None


@dataclass(frozen=True)
class VirtualSettings:
    boot_delay: float = 1.0
    first_boot_reboot: bool = False
    profile: str = "fast"
    faults: dict[str, DeviceFaults] = field(default_factory=dict)
    time_scale: float = 1.0
    pi3_core: float | None = None  # None: calibrate (rig.virtual.pi3.core_share)

    @property
    def throttled(self) -> bool:
        return self.profile == "pi3"

    def faults_for(self, device: str) -> DeviceFaults:
        return self.faults.get(device, DeviceFaults())


def settings_from_config(config: Any) -> VirtualSettings:
    """The ``virtual`` section of a RigConfig (already schema-checked) as settings."""
    section = dict(config.sections.get("virtual") or {})
    where = f"{config.where}: virtual"
    profile = section.get("profile", "fast")
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {PROFILES}", where=f"{where}.profile")
    faults: dict[str, DeviceFaults] = {}
    for name, raw in (section.get("faults") or {}).items():
        if name not in config.devices:
            raise ConfigError(
                f"faults for unknown device {name!r}",
                where=f"{where}.faults.{name}",
                hint=f"devices are: {', '.join(sorted(config.devices))}",
            )
        raw = raw or {}
        faults[name] = DeviceFaults(
            never_boots=bool(raw.get("never_boots", False)),
            wifi_drops_after=_opt_float(raw.get("wifi_drops_after")),
            power_glitch_after=_opt_float(raw.get("power_glitch_after")),
            write_error_at=raw.get("write_error_at"),
            slow_start=_opt_float(raw.get("slow_start")),
            undervoltage=bool(raw.get("undervoltage", False)),
            reboot_after_up=_opt_float(raw.get("reboot_after_up")),
        )
    for name in section.get("card_sizes") or {}:
        if name not in config.devices:
            raise ConfigError(
                f"a card size for unknown device {name!r}",
                where=f"{where}.card_sizes.{name}",
                hint=f"devices are: {', '.join(sorted(config.devices))}",
            )
    time_scale = _opt_float(section.get("time_scale"))
    pi3_core = _opt_float(section.get("pi3_core"))
    for key, value in (("time_scale", time_scale), ("pi3_core", pi3_core)):
        if value is not None and profile != "pi3":
            raise ConfigError(
                f"{key} applies to the pi3 profile only",
                where=f"{where}.{key}",
                hint="add `profile: pi3`, or drop the key",
            )
    if time_scale is not None and time_scale < 1:
        raise ConfigError(
            f"must be at least 1 (1: as fast as a Pi 3), not {time_scale}",
            where=f"{where}.time_scale",
        )
    if pi3_core is not None and not 0 < pi3_core <= 1:
        raise ConfigError(
            f"must be above 0 and at most 1 (a share of one host core), not {pi3_core}",
            where=f"{where}.pi3_core",
        )
    scale = time_scale or 1.0
    boot_delay = 1.0
    if profile == "pi3":
        from rig.virtual.pi3 import BOOT_SECONDS

        boot_delay = BOOT_SECONDS / scale
    return VirtualSettings(
        boot_delay=float(section.get("boot_delay", boot_delay)),
        # the real first boot resizes the root file system and reboots
        first_boot_reboot=bool(section.get("first_boot_reboot", profile == "pi3")),
        profile=profile,
        faults=faults,
        time_scale=scale,
        pi3_core=pi3_core,
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def expected_durations(profile: str = "pi3") -> dict[str, float]:
    """Expected seconds per phase (the middle of each range), for schedule estimates."""
    if profile not in _DURATIONS:
        raise ConfigError(f"unknown timing profile {profile!r}", hint=f"one of {PROFILES}")
    return {phase: (lo + hi) / 2 for phase, (lo, hi) in _DURATIONS[profile].items()}


def duration_ranges(profile: str = "pi3") -> dict[str, tuple[float, float]]:
    """(low, high) seconds per phase, for estimates that want the spread."""
    if profile not in _DURATIONS:
        raise ConfigError(f"unknown timing profile {profile!r}", hint=f"one of {PROFILES}")
    return dict(_DURATIONS[profile])
