"""What `rig serve` is told: the daemon, mail and github sections of rig.yaml, plus secrets.

Resources are data: this turns the raw sections into one frozen dataclass; the
routes, the worker, the mailer and the GitHub client read it and own the I/O.
Secrets (webhook secret, GitHub token, SMTP password, approval key) come from
the secrets file, ``$RIG_SECRET_<NAME>`` or a systemd credential
(``$CREDENTIALS_DIRECTORY/<name>``) and stay wrapped in :class:`Secret`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets as _secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.config import CREDENTIAL_PREFIX, SECRET_ENV_PREFIX, RigConfig, Secret, lookup_secret
from rig.daemon.egress import GITHUB_IMAGE_HOSTS, Egress
from rig.errors import ConfigError

DEFAULT_PORT = 8470
DEFAULT_MAX_BODY = 5 * 1024 * 1024  # GitHub's payloads can reach 25 MB; ours never do
DEFAULT_MAX_IMAGE = 16 << 30  # an image download (or an artifact's unpacked image) stops here
MARKER = "<!-- mark:untested -->"

# names looked up in the secrets file / env / credentials directory
WEBHOOK_SECRET = "webhook_secret"
GITHUB_TOKEN = "github_token"
SMTP_PASSWORD = "smtp_password"
APPROVAL_KEY = "approval_key"


@dataclass(frozen=True)
class RepoWatch:
    """One repository whose builds the rig accepts."""

    name: str  # owner/repo
    workflows: tuple[str, ...] = ()  # workflow file names or names; empty: any
    artifact: str = "*"  # glob for the artifact holding the image
    asset: str = "*.zip"  # glob for the release asset holding the image
    events: tuple[str, ...] = ("workflow_run", "release", "repository_dispatch")
    dispatch_event_type: str = "rig-test"
    branches: tuple[str, ...] = ()  # workflow_run head branches; empty: any
    # hosts a dispatched image_url may name (host or host:port); default: GitHub's own
    image_hosts: tuple[str, ...] = GITHUB_IMAGE_HOSTS


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    security: str  # starttls | ssl | none
    sender: str
    to: tuple[str, ...]
    username: str | None = None
    password: Secret | None = None
    ca_file: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class DaemonSettings:
    bind: str
    port: int
    public_url: str
    max_body: int
    matrix: Path | None
    acceptance_command: tuple[str, ...] | None  # None: `python -m rig run ...`
    acceptance_timeout: float
    device_wait: float  # seconds `rig run` waits for devices leased by someone else
    max_attempts: int
    approval_ttl: float  # seconds
    publish: dict[str, Any]
    poll_interval: float | None  # seconds; None: webhooks only
    direct_window: float  # accepted clock skew of /hooks/direct signatures
    state_dir: Path
    reports_dir: Path
    images_dir: Path
    config_path: Path | None
    api_url: str
    repos: dict[str, RepoWatch]
    private_hosts: tuple[str, ...]  # github.private_hosts: internal hosts the daemon may fetch
    max_image: int  # bytes
    status_context: str
    mail: MailSettings | None
    webhook_secret: Secret | None
    github_token: Secret | None
    approval_key: Secret
    # the secrets the acceptance run's own config names ({secret: NAME}: Wi-Fi, user), handed
    # to it as $RIG_SECRET_<NAME>: it gets neither the daemon's keys nor the credentials dir
    run_secrets: tuple[Secret, ...] = ()
    child_env: tuple[str, ...] = ()  # daemon.child_env: more variables children may see
    # daemon.warm_ahead: on workflow_run requested/in_progress, warm what the test will need
    warm_ahead: bool = True
    rig: RigConfig | None = field(default=None, compare=False, repr=False)

    def repo(self, name: str) -> RepoWatch | None:
        return self.repos.get(name.lower())

    def all_image_hosts(self) -> tuple[str, ...]:
        """Where a direct notification naming no repository may point: any repo's hosts."""
        hosts = [h for r in self.repos.values() for h in r.image_hosts]
        return tuple(hosts) if self.repos else GITHUB_IMAGE_HOSTS

    def egress(self) -> Egress:
        return Egress(self.api_url, self.private_hosts)


# an HMAC key shorter than this is guessable offline from one signed delivery or link
MIN_KEY_LENGTH = 16
HMAC_KEYS = (WEBHOOK_SECRET, APPROVAL_KEY)
DAEMON_SECRETS = (WEBHOOK_SECRET, GITHUB_TOKEN, SMTP_PASSWORD, APPROVAL_KEY)  # never to children


def _locate_secret(config: RigConfig, name: str) -> tuple[Secret, str] | None:
    """(secret, where it came from), looked up like every ``{secret: NAME}`` of rig.yaml
    (rig.config.lookup_secret: $RIG_SECRET_<NAME>, a systemd credential, the secrets file)."""
    from_file = {k: v.reveal() for k, v in config.sections.get("_secrets", {}).items()}
    found = lookup_secret(name, from_file)
    if found is None:
        return None
    env_name = SECRET_ENV_PREFIX + name.upper()
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    creds = [Path(cred_dir) / n for n in (name, CREDENTIAL_PREFIX + name)] if cred_dir else []
    if env_name in os.environ:
        origin = f"${env_name}"
    elif any(c.is_file() for c in creds):
        origin = str(next(c for c in creds if c.is_file()))
    else:
        origin = f"the secrets file: {name}"
    return found, origin


def find_secret(config: RigConfig, name: str) -> Secret | None:
    """The secrets file, then $RIG_SECRET_<NAME>, then $CREDENTIALS_DIRECTORY/<name>.

    A secret that is there but empty or (for the HMAC keys) short is refused: an
    unset shell variable written into a credential must not turn authentication off.
    """
    found = _locate_secret(config, name)
    if found is None:
        return None
    value, origin = found
    text = value.reveal()
    minimum = MIN_KEY_LENGTH if name in HMAC_KEYS else 1
    if len(text.strip()) < minimum or text != text.strip():
        what = (
            "is empty"
            if not text.strip()
            else "has leading or trailing white space"
            if text != text.strip()
            else f"is only {len(text)} characters long"
        )
        raise ConfigError(
            f"secret {name} {what}",
            where=origin,
            hint=f"use at least {minimum} random characters, e.g. "
            "`python3 -c 'import secrets; print(secrets.token_hex(32))'`"
            if minimum > 1
            else f"set {name} to its real value or remove it",
        )
    return value


def _approval_key(config: RigConfig, state_dir: Path) -> Secret:
    """A configured key, else one generated once and kept (0600) so links survive restarts."""
    found = find_secret(config, APPROVAL_KEY)
    if found is not None:
        return found
    path = state_dir / "daemon-approval.key"
    state_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # written whole, then renamed: a crash never leaves an empty key
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_secrets.token_urlsafe(32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    key = path.read_text().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"the generated approval key is {len(key)} characters long",
            where=str(path),
            hint="delete the file: the daemon makes a new one (mailed links stop working)",
        )
    return Secret(key, APPROVAL_KEY)


def _loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(config: RigConfig) -> DaemonSettings:
    """Build the daemon's settings from a loaded rig.yaml (sections already schema-checked)."""
    d = config.sections.get("daemon") or {}
    g = config.sections.get("github") or {}
    m = config.sections.get("mail") or {}
    base = config.source.parent if config.source else Path.cwd()
    where = config.where

    def path_of(value: str | None) -> Path | None:
        return (base / Path(value).expanduser()) if value else None

    state_dir = path_of(d.get("state")) or config.paths.state
    repos = {}
    for r in g.get("repositories", []):
        watch = RepoWatch(
            name=r["name"],
            workflows=tuple(r.get("workflows", ())),
            artifact=r.get("artifact", "*"),
            asset=r.get("asset", "*.zip"),
            events=tuple(r.get("events", RepoWatch.events)),
            dispatch_event_type=r.get("dispatch_event_type", "rig-test"),
            branches=tuple(r.get("branches", ())),
            image_hosts=tuple(r.get("image_hosts", GITHUB_IMAGE_HOSTS)),
        )
        repos[watch.name.lower()] = watch

    mail = None
    if m:
        security = m.get("security", "starttls")
        mail = MailSettings(
            host=m["host"],
            port=int(m.get("port", {"ssl": 465, "starttls": 587}.get(security, 25))),
            security=security,
            sender=m["from"],
            to=tuple(m["to"]) if isinstance(m["to"], list) else (m["to"],),
            username=m.get("username"),
            password=find_secret(config, SMTP_PASSWORD),
            ca_file=str(path_of(m["ca_file"])) if m.get("ca_file") else None,
            timeout=float(m.get("timeout", 30)),
        )
        if mail.security == "none" and not _loopback(mail.host):
            raise ConfigError(
                f"security: none sends mail (and any password) in clear text to {mail.host}",
                where=f"{where}: mail.security",
                hint="use starttls or ssl; none is only for a relay on this host (127.0.0.1)",
            )
        if mail.username and mail.password is None:
            raise ConfigError(
                "mail.username is set but no SMTP password was found",
                where=f"{where}: mail.username",
                hint=f"add {SMTP_PASSWORD} to the secrets file, set "
                f"${SECRET_ENV_PREFIX}{SMTP_PASSWORD.upper()} or a systemd credential",
            )

    command = d.get("acceptance_command")
    bind = d.get("bind", "127.0.0.1")
    port = int(d.get("port", DEFAULT_PORT))
    public_url = d.get("public_url") or f"http://{bind}:{port}"
    poll = d.get("poll_minutes")
    return DaemonSettings(
        bind=bind,
        port=port,
        public_url=public_url.rstrip("/"),
        max_body=int(d.get("max_body_bytes", DEFAULT_MAX_BODY)),
        matrix=path_of(d.get("matrix")),
        acceptance_command=tuple(command) if command else None,
        acceptance_timeout=float(d.get("acceptance_timeout_minutes", 240)) * 60,
        device_wait=float(d.get("device_wait_minutes", 60)) * 60,
        max_attempts=int(d.get("max_attempts", 3)),
        approval_ttl=float(d.get("approval_ttl_hours", 168)) * 3600,
        publish=dict(d.get("publish") or {"action": "unmark"}),
        poll_interval=float(poll) * 60 if poll else None,
        direct_window=float(d.get("direct_window_seconds", 300)),
        state_dir=state_dir,
        reports_dir=path_of(d.get("reports")) or config.paths.reports / "daemon",
        images_dir=path_of(d.get("images")) or config.paths.images / "candidates",
        config_path=config.source,
        api_url=g.get("api_url", "https://api.github.com").rstrip("/"),
        repos=repos,
        private_hosts=tuple(g.get("private_hosts", ())),
        max_image=int(d.get("max_image_bytes", DEFAULT_MAX_IMAGE)),
        status_context=g.get("status_context", "rig/acceptance"),
        mail=mail,
        webhook_secret=find_secret(config, WEBHOOK_SECRET),
        github_token=find_secret(config, GITHUB_TOKEN),
        approval_key=_approval_key(config, state_dir),
        run_secrets=tuple(
            secret
            for secret in (config.wifi.psk, config.user.password)
            if secret.name and "." not in secret.name and secret.name not in DAEMON_SECRETS
        ),
        child_env=tuple(d.get("child_env", ())),
        warm_ahead=bool(d.get("warm_ahead", True)),
        rig=config,
    )


def acceptance_argv(
    settings: DaemonSettings, candidate: Path, report_dir: Path, job_id: int
) -> list[str]:
    """The command that tests a candidate: `rig run MATRIX --candidate ... --report-dir ...`."""
    matrix = str(settings.matrix) if settings.matrix else ""
    if settings.acceptance_command is None:
        if not matrix:
            raise ConfigError(
                "no acceptance matrix configured",
                where="rig.yaml: daemon.matrix",
                hint='point daemon.matrix at a matrix whose scenarios use "image": "@candidate"',
            )
        argv = [sys.executable, "-m", "rig"]
        if settings.config_path:
            argv += ["--config", str(settings.config_path)]
        return [
            *argv,
            "run",
            matrix,
            "--candidate",
            str(candidate),
            "--report-dir",
            str(report_dir),
            "--wait",  # someone's `rig run` holds a device: wait for it, do not fail
            f"{settings.device_wait:.0f}",
        ]
    values = {
        "python": sys.executable,
        "config": str(settings.config_path or ""),
        "matrix": matrix,
        "candidate": str(candidate),
        "report_dir": str(report_dir),
        "job": str(job_id),
        "wait": f"{settings.device_wait:.0f}",
    }
    return [part.format(**values) for part in settings.acceptance_command]
