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
        "trusted_proxies",
        str,
        "",
        "Comma-separated peer IPs whose X-Forwarded-For is trusted (e.g. Traefik).",
    ),
    # -- accounts (password reset and invitation mail) --
    Setting("smtp_host", str, "", "SMTP server for reset mail; empty = log the link instead."),
    Setting("smtp_port", int, 25, "Port of the SMTP server."),
    Setting("mail_from", str, "", "Sender of the gateway's mail; default gateway@<domain>."),
    # -- deploys --
    Setting(
        "deploy_timeout", float, 30.0, "Seconds a new instance has to become healthy in a deploy."
    ),
    Setting("deploy_parallel", int, 2, "Teams deployed at once by `gateway deploy --all`."),
    Setting("max_pause", float, 30.0, "Longest a paused team's requests are held (seconds)."),
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
    Setting(
        "operators",
        str,
        "",
        "Comma-separated e-mails of signed-in users allowed the operator dashboard on the apex.",
    ),
)

RUNTIMES = ("local", "docker")


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
    trusted_proxies: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    mail_from: str = ""
    deploy_timeout: float = 30.0
    deploy_parallel: int = 2
    max_pause: float = 30.0
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
    operators: str = ""
    # Not a user setting: tests pass extra Datasette arguments (for example a plugins dir).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        domain = self.domain.strip().lower().rstrip(".")
        if not domain or any(c in domain for c in "/:@ "):
            raise ConfigError(
                f"invalid domain {self.domain!r}: give a bare host name like example.org"
            )
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"unknown runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}"
            )
        for name in ("port", "admin_port", "redirect_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ConfigError(f"{name} {getattr(self, name)} is out of range")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("give both --tls-cert and --tls-key (or neither)")
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
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")
        if self.retry_buffer < 0:
            raise ConfigError("retry_buffer cannot be negative (0 turns replay off)")

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
    def operator_set(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.operators.split(",") if e.strip())

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
        raise ConfigError(f"GATEWAY_{setting.name.upper()}={raw!r}: {exc}") from exc


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
