"""cloud-init NoCloud seed on the boot partition: user-data, network-config, meta-data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from rig.virtual.bootfiles import BootFileError

SSH_ENABLE = re.compile(r"systemctl\s+(enable|start)\s+(--now\s+)?ssh(\.service)?\s*$")


@dataclass
class CloudUser:
    name: str
    passwd: str | None = None  # crypt hash
    plain_password: str | None = None
    lock_passwd: bool = True
    ssh_keys: list[str] = field(default_factory=list)
    # singular `user:` (what Imager writes): the distro's default user, i.e. the image's
    # uid-1000 user renamed and given these settings, groups kept; a `users:` entry is
    # a new account (rpi-imager customization_generator.cpp, issue 1601)
    default: bool = False


@dataclass
class CloudConfig:
    instance_id: str
    hostname: str | None = None
    users: list[CloudUser] = field(default_factory=list)
    ssh_pwauth: bool | None = None
    ssh_enabled: bool = False
    wifi: list[tuple[str, str | None]] = field(default_factory=list)  # (ssid, password)
    wifi_country: str | None = None


def _yaml(text: str, name: str) -> dict:  # type: ignore[type-arg]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BootFileError(f"{name}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BootFileError(f"{name}: expected a mapping")
    return data


def parse_meta_data(text: str) -> tuple[str, str | None]:
    """(instance-id, local-hostname)."""
    data = _yaml(text, "meta-data")
    iid = data.get("instance-id") or data.get("instance_id")
    if not iid:
        raise BootFileError("meta-data: no instance-id")
    host = data.get("local-hostname")
    return str(iid), None if host is None else str(host)


def parse_cloud_init(
    meta_data: str, user_data: str | None, network_config: str | None
) -> CloudConfig:
    iid, local_hostname = parse_meta_data(meta_data)
    cfg = CloudConfig(iid, hostname=local_hostname)
    if user_data is not None:
        if not user_data.startswith("#cloud-config"):
            raise BootFileError("user-data: must start with '#cloud-config'")
        ud = _yaml(user_data, "user-data")
        cfg.hostname = ud.get("hostname") or ud.get("fqdn") or cfg.hostname
        if "ssh_pwauth" in ud:
            cfg.ssh_pwauth = bool(ud["ssh_pwauth"])
        if ud.get("enable_ssh") is True:
            cfg.ssh_enabled = True
        for entry in ud.get("runcmd") or []:
            cmd = " ".join(entry) if isinstance(entry, list) else str(entry)
            if SSH_ENABLE.search(cmd.strip()):
                cfg.ssh_enabled = True
        single = ud.get("user")
        if isinstance(single, str):
            single = {"name": single}
        if isinstance(single, dict) and single.get("name"):
            keys = single.get("ssh_authorized_keys") or single.get("ssh-authorized-keys") or []
            cfg.users.append(
                CloudUser(
                    name=str(single["name"]),
                    passwd=single.get("passwd") or single.get("hashed_passwd"),
                    plain_password=single.get("plain_text_passwd"),
                    lock_passwd=bool(single.get("lock_passwd", True)),
                    ssh_keys=[str(k) for k in keys],
                    default=True,
                )
            )
        elif single is not None:
            raise BootFileError("user-data: user: needs a name")
        for u in ud.get("users") or []:
            if u == "default":
                continue
            if not isinstance(u, dict) or not u.get("name"):
                raise BootFileError("user-data: each user needs a name")
            keys = u.get("ssh_authorized_keys") or u.get("ssh-authorized-keys") or []
            cfg.users.append(
                CloudUser(
                    name=str(u["name"]),
                    passwd=u.get("passwd") or u.get("hashed_passwd"),
                    plain_password=u.get("plain_text_passwd"),
                    lock_passwd=bool(u.get("lock_passwd", True)),
                    ssh_keys=[str(k) for k in keys],
                )
            )
    if network_config is not None:
        nc = _yaml(network_config, "network-config")
        nc = nc.get("network", nc)
        if nc.get("version") != 2:
            raise BootFileError("network-config: only netplan version 2 is supported")
        for _iface, spec in (nc.get("wifis") or {}).items():
            spec = spec or {}
            if spec.get("regulatory-domain"):
                cfg.wifi_country = str(spec["regulatory-domain"])
            for ssid, ap in (spec.get("access-points") or {}).items():
                ap = ap or {}
                auth = ap.get("auth") or {}
                pw = ap.get("password", auth.get("password"))
                cfg.wifi.append((str(ssid), None if pw is None else str(pw)))
    return cfg
