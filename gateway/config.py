"""One configuration object for the CLI, the Python API and the tests.

Every setting is declared once, as data, in ``SETTINGS``: its name, type, default and help.
The CLI turns each into a ``--flag`` that also reads ``GATEWAY_<NAME>`` from the environment,
``docs/settings.md`` documents each (a test checks that), and ``Config`` holds the values.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("domain", str, "localhost", "Apex domain. Teams are served at <slug>.<domain>."),
    Setting("host", str, "127.0.0.1", "Address the public listener binds to."),
    Setting("port", int, 8000, "Port the public listener binds to."),
    Setting("data_dir", Path, Path("./data"), "Directory for the control store and team volumes."),
    Setting("runtime", str, "local", "Where team instances run: 'local' processes or 'docker'."),
    Setting(
        "public_url",
        str,
        "",
        "Base URL users see, e.g. https://example.org. Defaults to http://<domain>:<port>.",
    ),
    Setting(
        "hold_timeout",
        float,
        10.0,
        "Seconds a request to a known team waits for a healthy target before 503.",
    ),
    Setting("connect_timeout", float, 5.0, "Seconds to open a connection to a target (then 502)."),
    Setting(
        "read_timeout", float, 60.0, "Seconds to wait for a target's response headers (then 504)."
    ),
    Setting(
        "drain_timeout",
        float,
        30.0,
        "Seconds a draining target may finish in-flight requests before stragglers get 504.",
    ),
    Setting("health_interval", float, 1.0, "Seconds between active health checks of a target."),
    Setting("health_timeout", float, 5.0, "Seconds before a health check counts as failed."),
    Setting(
        "pool_idle_timeout",
        float,
        2.0,
        "Seconds an idle upstream connection is kept; below the upstream's own 5 s keep-alive.",
    ),
    Setting(
        "retry_buffer",
        int,
        64 * 1024,
        "Largest request body (bytes) held for replay; larger bodies are never retried.",
    ),
    Setting(
        "max_request_line",
        int,
        8192,
        "Longest Host header or request target accepted (bytes); longer gets 400/414.",
    ),
    # -- hostile clients (public listener limits, gateway/limits.py) --
    Setting(
        "max_header_bytes",
        int,
        32 * 1024,
        "Largest request header block accepted (bytes, names and values); larger gets 431.",
    ),
    Setting("max_headers", int, 100, "Most header fields in one request; more gets 431."),
    Setting(
        "header_timeout",
        float,
        10.0,
        "Seconds a client has to send a whole request head (from connecting or its first byte); "
        "then 408.",
    ),
    Setting(
        "body_idle_timeout",
        float,
        30.0,
        "Seconds a request body may stall between reads (not a total); then 408, upstream aborted.",
    ),
    Setting(
        "max_connections", int, 10000, "Most open client connections; more are closed at once."
    ),
    Setting(
        "max_connections_per_ip",
        int,
        256,
        "Most open connections from one client IP (trusted proxies exempt); more are closed.",
    ),
    Setting(
        "watch_interval", float, 0.25, "Seconds between checks of the control store for changes."
    ),
    Setting("log_level", str, "info", "Log level: debug, info, warning or error."),
    Setting(
        "instance_memory_mb", int, 512, "Memory limit of one team's Datasette (docker runtime)."
    ),
    Setting("upload_max_bytes", int, 1024**3, "Largest CSV upload accepted (bytes); then 413."),
    Setting(
        "replaced_table_days",
        float,
        7.0,
        "Days a table replaced by an upload is kept, restorable from the dashboard.",
    ),
    Setting(
        "trusted_proxies",
        str,
        "",
        "Comma-separated peer IPs whose X-Forwarded-For is trusted (e.g. Traefik).",
    ),
    # -- accounts (password reset and invitation mail) --
    Setting("smtp_host", str, "", "SMTP server for reset mail; empty = log the link instead."),
    Setting("smtp_port", int, 25, "Port of the SMTP server."),
    Setting("mail_from", str, "", "Sender of the gateway's mail; default gateway@<domain>."),
    # -- tenant integrity: sign-up limits and storage quota (issue 13) --
    Setting(
        "signups_per_ip_hour",
        int,
        5,
        "Successful registrations one client IP may make per hour; more get 429 (0 = no limit).",
    ),
    Setting(
        "signups_per_hour",
        int,
        30,
        "Successful registrations the gateway accepts per hour in all; then 429 (0 = no limit).",
    ),
    Setting(
        "max_teams",
        int,
        100,
        "Teams this host serves; at the limit sign-ups are closed (teams create --force may "
        "exceed it; 0 = no limit).",
    ),
    Setting(
        "team_quota_bytes",
        int,
        1024**3,
        "Storage per team (volume plus uploads in progress); an upload past it gets 413.",
    ),
    # -- tenant integrity: teams one user may own (issue 13) --
    Setting(
        "max_teams_per_user",
        int,
        5,
        "Teams one user may own; making an owner beyond it is refused (the CLI's --force may "
        "exceed it; 0 = no limit).",
    ),
    # -- deploys --
    Setting(
        "deploy_timeout", float, 30.0, "Seconds a new instance has to become healthy in a deploy."
    ),
    Setting("deploy_parallel", int, 2, "Teams deployed at once by `gateway deploy --all`."),
    Setting("max_pause", float, 30.0, "Longest a paused team's requests are held (seconds)."),
    # -- backups --
    Setting(
        "backup_replica",
        str,
        "",
        "Where Litestream replicates every database: a path, file:// or s3:// URL; "
        "'' = <data_dir>/../backups; 'off' = no replication.",
    ),
    Setting("backup_retention", float, 24.0, "Hours of history kept for point-in-time restore."),
    Setting(
        "backup_sync_interval",
        float,
        0.5,
        "Seconds between uploads of new changes to the replica (the RPO's main part).",
    ),
    # -- edge and operations (TLS without Traefik, admin listener, access log) --
    Setting("tls_cert", str, "", "PEM certificate (chain) file: serve HTTPS on the public port."),
    Setting("tls_key", str, "", "PEM private key file matching --tls-cert."),
    Setting(
        "redirect_port",
        int,
        0,
        "With TLS on: port of a plain-HTTP listener that redirects to HTTPS (0 = none).",
    ),
    Setting(
        "hsts_max_age",
        int,
        31536000,
        "Strict-Transport-Security max-age (seconds) sent on HTTPS responses (0 = no header).",
    ),
    # -- TLS from Traefik's ACME store (the gateway serves TLS, Traefik renews) --
    Setting(
        "tls_acme_store",
        str,
        "",
        "Traefik's acme.json: serve HTTPS with its certificate for <domain> and *.<domain>, "
        "reloaded on renewal (instead of --tls-cert/--tls-key).",
    ),
    Setting(
        "tls_acme_resolver",
        str,
        "",
        "With --tls-acme-store: the certificate resolver to read ('' = any that has one).",
    ),
    Setting(
        "tls_acme_interval",
        float,
        5.0,
        "With --tls-acme-store: seconds between checks of the store for a renewed certificate.",
    ),
    Setting("admin_host", str, "127.0.0.1", "Address the admin API listener binds to."),
    Setting(
        "admin_port",
        int,
        8001,
        "Port of the admin API listener (0 = any free port, recorded in <data_dir>/admin.json).",
    ),
    Setting("admin_socket", str, "", "Unix socket path for the admin API instead of a TCP port."),
    Setting(
        "admin_token",
        str,
        "",
        "Bearer token of the admin API; generated once and kept in <data_dir>/admin.token.",
    ),
    Setting("access_log", str, "", "JSON access log: '' (off), '-' (stdout) or a file path."),
    # -- operator failure paths (unsent mail, free disk space) --
    Setting(
        "unsent_mail",
        str,
        "drop",
        "Mail without --smtp-host: 'drop' (log only that it was not sent) or 'log' (one line "
        "with its link: it is a live credential).",
    ),
    Setting(
        "min_free_mb",
        int,
        256,
        "Free MiB in --data-dir below which /readyz is not ready and a warning is logged.",
    ),
    Setting(
        "operators",
        str,
        "",
        "Comma-separated e-mails allowed the operator pages, if the account's address is "
        "verified (made with `users create`); see `users grant-operator`.",
    ),
)

RUNTIMES = ("local", "docker")
LOG_LEVELS = ("debug", "info", "warning", "error")


def flag(name: str) -> str:
    """The command-line flag of setting ``name``: what an error message should name."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Config:
    domain: str = "localhost"
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    runtime: str = "local"
    public_url: str = ""
    hold_timeout: float = 10.0
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    drain_timeout: float = 30.0
    health_interval: float = 1.0
    health_timeout: float = 5.0
    pool_idle_timeout: float = 2.0
    retry_buffer: int = 64 * 1024
    max_request_line: int = 8192
    # -- hostile clients --
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_connections: int = 10000
    max_connections_per_ip: int = 256
    watch_interval: float = 0.25
    log_level: str = "info"
    instance_memory_mb: int = 512
    upload_max_bytes: int = 1024**3
    replaced_table_days: float = 7.0
    trusted_proxies: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    mail_from: str = ""
    # tenant integrity (issue 13)
    signups_per_ip_hour: int = 5
    signups_per_hour: int = 30
    max_teams: int = 100
    team_quota_bytes: int = 1024**3
    # teams one user may own (issue 13)
    max_teams_per_user: int = 5
    deploy_timeout: float = 30.0
    deploy_parallel: int = 2
    max_pause: float = 30.0
    backup_replica: str = ""
    backup_retention: float = 24.0
    backup_sync_interval: float = 0.5
    tls_cert: str = ""
    tls_key: str = ""
    redirect_port: int = 0
    hsts_max_age: int = 31536000
    # -- TLS from Traefik's ACME store --
    tls_acme_store: str = ""
    tls_acme_resolver: str = ""
    tls_acme_interval: float = 5.0
    admin_host: str = "127.0.0.1"
    admin_port: int = 8001
    admin_socket: str = ""
    admin_token: str = ""
    access_log: str = ""
    # -- operator failure paths (unsent mail, free disk space) --
    unsent_mail: str = "drop"
    min_free_mb: int = 256
    operators: str = ""
    # Not a user setting: tests pass extra Datasette arguments (for example a plugins dir).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        """The one validation step: each error is one line naming the flag and the fix."""
        domain = self.domain.strip().lower().rstrip(".")
        if not domain or any(c in domain for c in "/:@ "):
            raise ConfigError(
                f"--domain: invalid domain {self.domain!r}: give a bare host name like example.org"
            )
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"--runtime: unknown runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}"
            )
        level = self.log_level.strip().lower()
        if level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level {self.log_level!r} is not a log level: choose one of "
                f"{', '.join(LOG_LEVELS)}"
            )
        object.__setattr__(self, "log_level", level)
        for name in ("port", "admin_port", "redirect_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ConfigError(
                    f"{flag(name)} {getattr(self, name)} is out of range: give a port 0-65535"
                )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("give both --tls-cert and --tls-key (or neither)")
        if self.unsent_mail not in ("drop", "log"):
            raise ConfigError(f"--unsent-mail {self.unsent_mail!r}: choose 'drop' or 'log'")
        if self.redirect_port and not (self.tls_cert or self.tls_acme_store):
            raise ConfigError(
                "--redirect-port redirects plain HTTP to HTTPS: it needs --tls-cert and "
                "--tls-key or --tls-acme-store (or drop --redirect-port)"
            )
        if self.tls_acme_store and self.tls_cert:
            raise ConfigError("give --tls-cert/--tls-key or --tls-acme-store, not both")
        positive = (
            "hold_timeout",
            "connect_timeout",
            "read_timeout",
            "drain_timeout",
            "health_interval",
            "health_timeout",
            "pool_idle_timeout",
            "watch_interval",
            "deploy_timeout",
            "deploy_parallel",
            "max_pause",
            "backup_retention",
            "backup_sync_interval",
            "tls_acme_interval",
            "max_request_line",
            "max_header_bytes",
            "max_headers",
            "header_timeout",
            "body_idle_timeout",
            "max_connections",
            "max_connections_per_ip",
            "instance_memory_mb",
            "upload_max_bytes",
            "replaced_table_days",
        )
        for name in positive:
            value = getattr(self, name)
            if not value > 0 or value != value or value == float("inf"):  # NaN and inf too
                raise ConfigError(f"{flag(name)} must be a positive number (got {value})")
        if self.min_free_mb < 0:
            raise ConfigError("--min-free-mb cannot be negative (0 turns the check off)")
        if self.retry_buffer < 0:
            raise ConfigError("--retry-buffer cannot be negative (0 turns replay off)")

    @property
    def base_url(self) -> str:
        """The apex URL users see; never derived from a request's Host header."""
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        port = "" if self.port == (443 if self.tls else 80) else f":{self.port}"
        return f"{scheme}://{self.domain}{port}"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_acme_store)

    def team_url(self, slug: str) -> str:
        scheme, _, rest = self.base_url.partition("://")
        return f"{scheme}://{slug}.{rest}"

    @property
    def control_db(self) -> Path:
        return self.data_dir / "control.db"

    @property
    def teams_dir(self) -> Path:
        return self.data_dir / "teams"

    @property
    def trusted_proxy_set(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.trusted_proxies.split(",") if p.strip())

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def coerce(setting: Setting, raw: str) -> Any:
    try:
        if setting.type is Path:
            return Path(raw)
        return setting.type(raw)
    except ValueError as exc:
        raise ConfigError(
            f"GATEWAY_{setting.name.upper()}={raw!r} is not a valid {setting.type.__name__} "
            f"(the variable of {flag(setting.name)})"
        ) from exc


def from_env(environ: dict[str, str] | None = None, **overrides: Any) -> Config:
    """Build a Config from GATEWAY_* variables, then explicit overrides (CLI flags win)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(f"GATEWAY_{setting.name.upper()}")
        if raw is not None:
            values[setting.name] = coerce(setting, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**values)
