"""rig.yaml: where it is found, what it may say, and the virtual rig it defaults to.

Resources are data: the loader turns the file into frozen dataclasses that say
*what* and *where* (a device's power port, its mux); drivers are built from them
later and own all I/O. Every problem is reported with the file and the key path.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rig.errors import ConfigError, ValidationErrors
from rig.schema import validate

CONFIG_ENV = "RIG_CONFIG"
SECRET_ENV_PREFIX = "RIG_SECRET_"
CREDENTIAL_PREFIX = "rig_"  # see rig/host/rig.service


MASK_MIN = 6  # shorter values would mask ordinary words in every log line
_known: set[str] = set()  # the value of every Secret made in this process
_known_lock = threading.Lock()


def mask(text: str) -> str:
    """``text`` with every known secret's value replaced by ``***`` (for logged commands)."""
    with _known_lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, "***")
    return text


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks.

    Its value is also remembered for :func:`mask`: a command line or output that
    carries it (a password piped to chpasswd, a PSK in a file) is logged masked.
    """

    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str = "") -> None:
        self._value = value
        self.name = name
        if len(value) >= MASK_MIN:
            with _known_lock:
                _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name or '***'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Each driver has its own small config (the schema's oneOf branch, one class each);
# rig/hardware/build.py maps the driver name to the class that takes it.
OFF_TIME = 3.0  # seconds: long enough to drain a Pi 3's capacitors


@dataclass(frozen=True)
class UsbHubPortConfig:
    """A port of a hub with per-port power switching (uhubctl's kind), at a USB location."""

    location: str
    port: int
    off_time: float = OFF_TIME
    driver: ClassVar[str] = "usb-hub"

    @property
    def unit(self) -> str:
        """The switching unit the port is on (two devices on one unit and port collide)."""
        return self.location


@dataclass(frozen=True)
class YkushPortConfig:
    """A port of a Yepkit YKUSH board, by the board's serial."""

    port: int
    serial: str | None = None
    off_time: float = OFF_TIME
    driver: ClassVar[str] = "ykush"

    @property
    def unit(self) -> str | None:
        return self.serial


@dataclass(frozen=True)
class CommandPowerConfig:
    """A switch driven by shell commands (a PDU, a relay board), with {port} and {device}."""

    on: str
    off: str
    status: str | None = None
    port: int | None = None
    timeout: float = 30.0
    off_time: float = OFF_TIME
    driver: ClassVar[str] = "command"

    @property
    def unit(self) -> None:
        return None  # whatever the commands drive: the rig cannot tell


PowerConfig = UsbHubPortConfig | YkushPortConfig | CommandPowerConfig


@dataclass(frozen=True)
class UsbSdMuxConfig:
    serial: str
    driver: ClassVar[str] = "usb-sd-mux"


@dataclass(frozen=True)
class SdwireConfig:
    serial: str
    driver: ClassVar[str] = "sdwire"


MuxConfig = UsbSdMuxConfig | SdwireConfig
POWER_CONFIGS: dict[str, type[PowerConfig]] = {
    c.driver: c for c in (UsbHubPortConfig, YkushPortConfig, CommandPowerConfig)
}
MUX_CONFIGS: dict[str, type[MuxConfig]] = {c.driver: c for c in (UsbSdMuxConfig, SdwireConfig)}


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    power: PowerConfig
    mux: MuxConfig
    model: str = "pi3"
    host: str | None = None
    ssh_port: int = 22
    http_port: int = 80
    console: str | None = None  # serial port wired to the device's UART, captured per scenario
    console_baud: int = 115200


@dataclass(frozen=True)
class WifiConfig:
    ssid: str
    psk: Secret
    country: str
    hidden: bool = False


@dataclass(frozen=True)
class UserConfig:
    name: str
    password: Secret
    ssh_keys: tuple[str, ...] = ()
    builtin: bool = False  # the virtual rig's user, whose password the README publishes


@dataclass(frozen=True)
class AdminConfig:
    """The product's admin account on each device; no password: one per run is generated."""

    name: str = "admin"
    password: Secret | None = None


@dataclass(frozen=True)
class Paths:
    images: Path
    state: Path
    reports: Path
    cache_limit_gb: float = 20.0


@dataclass(frozen=True)
class RigConfig:
    """The whole rig: devices plus what every device gets."""

    source: Path | None  # None: the built-in virtual rig
    devices: dict[str, DeviceConfig]
    wifi: WifiConfig
    user: UserConfig
    paths: Paths
    virtual: bool
    ssh: dict[str, Any] = field(default_factory=dict)
    admin: AdminConfig = field(default_factory=AdminConfig)
    provision: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # run, daemon, mail, github, virtual

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "<built-in virtual rig>"

    def device(self, name: str) -> DeviceConfig:
        try:
            return self.devices[name]
        except KeyError:
            known = ", ".join(sorted(self.devices)) or "none"
            raise ConfigError(
                f"no device {name!r} (configured: {known})", where=self.where
            ) from None


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / default)


def user_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "rig" / "rig.yaml"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """--config FILE, else $RIG_CONFIG, else ./rig.yaml, else the user's config dir."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", where="--config")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", where=f"${CONFIG_ENV}")
        return path
    for candidate in (Path("rig.yaml"), user_config_path()):
        if candidate.is_file():
            return candidate
    return None


# The virtual rig: three Pi 3s whose hub and muxes are emulated at the USB /
# SCSI level, so the production drivers below run unchanged against them.
VIRTUAL_CONFIG: dict[str, Any] = {
    "devices": {
        f"pi3-{letter}": {
            "model": "pi3",
            "power": {"driver": "usb-hub", "location": "1-1", "port": n, "off_time": 0.2},
            "mux": {"driver": "usb-sd-mux", "serial": f"00000000004{n}"},
            "host": f"127.0.42.{10 + n}",
            "ssh_port": 2222,
            "http_port": 8080,
        }
        for n, letter in ((1, "a"), (2, "b"), (3, "c"))
    },
    "wifi": {"ssid": "rig-virtual-ap", "psk": "virtual-rig-psk", "country": "DE"},
    "user": {"name": "pi", "password": "raspberry-rig"},
    "virtual": {},
}


def load_config(path: str | os.PathLike[str] | None = None, *, search: bool = True) -> RigConfig:
    """Load and validate rig.yaml; no file anywhere means the virtual rig."""
    source = find_config(path) if search or path else None
    if source is None:
        return _build(VIRTUAL_CONFIG, None)
    text = read_user_file(source)
    data = parse_yaml(text, str(source))
    if data is None:
        data = {}
    return _build(data, source)


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read the `on:`/`off:`
    keys of a command power switch (and an SSID called "yes") as booleans."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


MAX_USER_FILE = 4 << 20  # a config, a secrets file or a matrix is a few kB


def read_user_file(path: Path, limit: int = MAX_USER_FILE) -> str:
    """A file the user named, as text: a regular file of at most ``limit`` bytes.

    Opened without blocking and checked on the descriptor, so a FIFO, ``/dev/zero``
    or a directory is a ConfigError at once instead of a hang or an endless read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", where=str(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(
                "not a regular file (a directory, a device or a pipe)", where=str(path)
            )
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigError(f"larger than {limit} bytes: not a file the rig reads", where=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", where=str(path)) from None


def parse_yaml(text: str, where: str) -> Any:
    """YAML with syntax errors located as file:line:column."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", where=where) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise ConfigError(f"invalid YAML: {e.problem}", where=loc) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", where=where) from None


def _build(data: Any, source: Path | None) -> RigConfig:
    where = str(source) if source else "<built-in virtual rig>"
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping of sections (devices, wifi, user, ...)", where=where)
    problems = validate(data, "config")
    if problems:
        raise ValidationErrors(where, problems)

    if "devices" not in data:
        # no hardware configured: the virtual rig's devices, with this file's other settings
        data = {**VIRTUAL_CONFIG, **data, "devices": VIRTUAL_CONFIG["devices"]}
        data.setdefault("virtual", {})
    base = source.parent if source else Path.cwd()
    secrets = _load_secrets(data.get("secrets"), base, where)

    def secret(value: Any, key: str) -> Secret:
        if isinstance(value, dict):
            name = value["secret"]
            found = lookup_secret(name, secrets)
            if found is not None:
                return found
            raise ConfigError(
                f"secret {name!r} not found",
                where=f"{where}: {key}",
                hint=f"add it to the secrets file, set ${SECRET_ENV_PREFIX}{name.upper()}, or "
                f"give the service the systemd credential {name!r} (LoadCredential=)",
            )
        return Secret(str(value), key)

    devices = {name: _device(name, d) for name, d in data["devices"].items()}
    _check_unique_hardware(devices, where)
    _check_consoles(devices, data.get("provision") or {}, where)

    wifi_raw = data.get("wifi") or VIRTUAL_CONFIG["wifi"]
    user_raw = data.get("user") or VIRTUAL_CONFIG["user"]
    wifi = WifiConfig(
        ssid=wifi_raw["ssid"],
        psk=secret(wifi_raw["psk"], "wifi.psk"),
        country=wifi_raw["country"],
        hidden=wifi_raw.get("hidden", False),
    )
    user = UserConfig(
        name=user_raw["name"],
        password=secret(user_raw["password"], "user.password"),
        ssh_keys=tuple(user_raw.get("ssh_keys", ())),
        builtin=not data.get("user"),
    )
    admin_raw = data.get("admin") or {}
    admin = AdminConfig(
        name=admin_raw.get("name", "admin"),
        password=secret(admin_raw["password"], "admin.password")
        if "password" in admin_raw
        else None,
    )
    raw_paths = data.get("paths", {})

    def path(key: str, default: Path) -> Path:
        value = raw_paths.get(key)
        return (base / Path(value).expanduser()) if value else default

    state = path("state", _xdg("XDG_STATE_HOME", ".local/state") / "rig")
    paths = Paths(
        images=path("images", _xdg("XDG_CACHE_HOME", ".cache") / "rig" / "images"),
        state=state,
        reports=path("reports", Path.cwd() / "reports"),
        cache_limit_gb=float(raw_paths.get("cache_limit_gb", 20.0)),
    )
    sections = {k: data.get(k) or {} for k in ("run", "daemon", "mail", "github", "virtual")}
    sections["_secrets"] = {k: Secret(str(v), k) for k, v in secrets.items()}
    return RigConfig(
        source=source,
        devices=devices,
        wifi=wifi,
        user=user,
        paths=paths,
        virtual="virtual" in data,
        ssh=data.get("ssh", {}),
        admin=admin,
        provision=data.get("provision", {}),
        sections=sections,
    )


def _device(name: str, d: dict[str, Any]) -> DeviceConfig:
    # the schema checked each section against its driver's branch: the keys fit the class
    p = {k: v for k, v in d["power"].items() if k != "driver"}
    for key in ("timeout", "off_time"):
        if key in p:
            p[key] = float(p[key])
    power = POWER_CONFIGS[d["power"]["driver"]](**p)
    mux = MUX_CONFIGS[d["mux"]["driver"]](serial=d["mux"]["serial"])
    return DeviceConfig(
        name=name,
        power=power,
        mux=mux,
        model=d.get("model", "pi3"),
        host=d.get("host"),
        ssh_port=d.get("ssh_port", 22),
        http_port=d.get("http_port", 80),
        console=d.get("console", {}).get("port"),
        console_baud=int(d.get("console", {}).get("baud", 115200)),
    )


def _check_consoles(
    devices: dict[str, DeviceConfig], provision: dict[str, Any], where: str
) -> None:
    """A console on a Pi 3's UART shows nothing unless config.txt enables the UART."""
    lines = [str(line).strip() for line in provision.get("config_txt") or ()]
    if "enable_uart=1" in lines:
        return
    problems = [
        (
            f"devices.{name}.console",
            "the UART stays off without enable_uart=1: add it to provision.config_txt",
        )
        for name, dev in devices.items()
        if dev.console
    ]
    if problems:
        raise ValidationErrors(where, problems)


def _check_unique_hardware(devices: dict[str, DeviceConfig], where: str) -> None:
    """Two devices on one power port or one mux would switch each other's cards."""
    problems: list[tuple[str, str]] = []
    seen_power: dict[tuple[Any, ...], str] = {}
    seen_mux: dict[tuple[str, str], str] = {}
    for name, dev in devices.items():
        p = dev.power
        if p.driver != "command":
            key = (p.driver, p.unit, p.port)
            if key in seen_power:
                problems.append(
                    (f"devices.{name}.power", f"same port as device {seen_power[key]!r}")
                )
            seen_power.setdefault(key, name)
        mkey = (dev.mux.driver, dev.mux.serial)
        if mkey in seen_mux:
            problems.append((f"devices.{name}.mux", f"same mux as device {seen_mux[mkey]!r}"))
        seen_mux.setdefault(mkey, name)
    if problems:
        raise ValidationErrors(where, problems)


def lookup_secret(name: str, from_file: dict[str, Any]) -> Secret | None:
    """$RIG_SECRET_<NAME>, then the systemd credential ``$CREDENTIALS_DIRECTORY/<name>``
    (how the flash host's unit hands secrets over), then the secrets file."""
    env = os.environ.get(SECRET_ENV_PREFIX + name.upper())
    if env is not None:
        return Secret(env, name)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        # LoadCredential=NAME:FILE gives NAME; the shipped unit's LoadCredential=rig:DIR
        # gives one rig_<file> per file in DIR
        for cred in (Path(cred_dir) / name, Path(cred_dir) / f"{CREDENTIAL_PREFIX}{name}"):
            if cred.is_file():
                # a credential written with `echo` ends in a newline that is not the secret
                return Secret(cred.read_text().rstrip("\r\n"), name)
    if name in from_file:
        return Secret(str(from_file[name]), name)
    return None


def _load_secrets(ref: str | None, base: Path, where: str) -> dict[str, Any]:
    if not ref:
        return {}
    path = (base / Path(ref).expanduser()).resolve()
    if not path.is_file():
        raise ConfigError(f"secrets file {path} does not exist", where=f"{where}: secrets")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"secrets file {path} is readable by others (mode {mode:o})",
            where=f"{where}: secrets",
            hint=f"chmod 600 {path}",
        )
    data = parse_yaml(read_user_file(path), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping NAME: value", where=str(path))
    return data
