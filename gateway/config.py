"""One configuration object for the CLI, the Python API and the tests.

Every setting is declared once, as a ``Config`` field: its type, default, help and whether it
must be positive (``setting(...)``). ``SETTINGS`` is derived from those fields; the CLI turns
each into a ``--flag`` that also reads ``GATEWAY_<NAME>`` from the environment, and
``docs/settings.md`` documents each (a test checks that). The few knobs read from the
environment only are in ``ENV_ONLY``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
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
    positive: bool = False  # must be > 0 (and finite)


def setting(default: Any, help: str, *, positive: bool = False) -> Any:
    """A user setting of ``Config``: a flag, a ``GATEWAY_*`` variable and a docs row."""
    return field(default=default, metadata={"help": help, "positive": positive})


RUNTIMES = ("local", "docker", "swarm")
LOG_LEVELS = ("debug", "info", "warning", "error")


def flag(name: str) -> str:
    """The command-line flag of setting ``name``: what an error message should name."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Config:
    """Every setting, declared once: its type, default and help (``setting``). ``SETTINGS``,
    the CLI's flags, the ``GATEWAY_*`` variables and docs/settings.md all come from here."""

    domain: str = setting("localhost", "Apex domain. Teams are served at <slug>.<domain>.")
    host: str = setting("127.0.0.1", "Address the public listener binds to.")
    port: int = setting(8000, "Port the public listener binds to.")
    data_dir: Path = setting(Path("./data"), "Directory for the control store and team volumes.")
    runtime: str = setting(
        "local",
        "Where team instances run: 'local' processes, 'docker' containers or 'swarm' services.",
    )
    public_url: str = setting(
        "", "Base URL users see, e.g. https://example.org. Defaults to http://<domain>:<port>."
    )
    hold_timeout: float = setting(
        10.0,
        "Seconds a request to a known team waits for a healthy target before 503.",
        positive=True,
    )
    connect_timeout: float = setting(
        5.0, "Seconds to open a connection to a target (then 502).", positive=True
    )
    read_timeout: float = setting(
        60.0, "Seconds to wait for a target's response headers (then 504).", positive=True
    )
    drain_timeout: float = setting(
        30.0,
        "Seconds a draining target may finish in-flight requests before stragglers get 504.",
        positive=True,
    )
    health_interval: float = setting(
        1.0, "Seconds between active health checks of a target.", positive=True
    )
    health_timeout: float = setting(
        5.0, "Seconds before a health check counts as failed.", positive=True
    )
    pool_idle_timeout: float = setting(
        2.0,
        "Seconds an idle upstream connection is kept; below the upstream's own 5 s keep-alive.",
        positive=True,
    )
    retry_buffer: int = setting(
        64 * 1024, "Largest request body (bytes) held for replay; larger bodies are never retried."
    )
    max_request_line: int = setting(
        8192,
        "Longest Host header or request target accepted (bytes); longer gets 400/414.",
        positive=True,
    )
    # -- hostile clients (public listener limits, gateway/limits.py) --
    max_header_bytes: int = setting(
        32 * 1024,
        "Largest request header block accepted (bytes, names and values); larger gets 431.",
        positive=True,
    )
    max_headers: int = setting(
        100, "Most header fields in one request; more gets 431.", positive=True
    )
    header_timeout: float = setting(
        10.0,
        "Seconds a client has to send a whole request head (from connecting or its first byte); "
        "then 408.",
        positive=True,
    )
    body_idle_timeout: float = setting(
        30.0,
        "Seconds a request body may stall between reads (not a total); then 408, upstream aborted.",
        positive=True,
    )
    max_connections: int = setting(
        10000, "Most open client connections; more are closed at once.", positive=True
    )
    max_connections_per_ip: int = setting(
        256,
        "Most open connections from one client IP (trusted proxies exempt); more are closed.",
        positive=True,
    )
    watch_interval: float = setting(
        0.25, "Seconds between checks of the control store for changes.", positive=True
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")
    instance_memory_mb: int = setting(
        512, "Memory limit of one team's Datasette (docker and swarm runtimes).", positive=True
    )
    swarm_node_label: str = setting(
        "",
        "Swarm runtime: new teams go only to nodes with this node label (KEY or KEY=VALUE); "
        "empty: any ready, active node the gateway reaches (today its own node only).",
    )
    upload_max_bytes: int = setting(
        1024**3, "Largest CSV upload accepted (bytes); then 413.", positive=True
    )
    idle_timeout: float = setting(
        1800.0,
        "Seconds without a request after which a team sleeps (its instance stops, its volume "
        "stays; the first request wakes it). 0: never. `gateway teams idle-timeout` sets one "
        "team's own.",
    )
    local_start: str = setting(
        "fork",
        "How the local runtime starts a Datasette: 'fork' it from a zygote that imported "
        "Datasette once (a start or wake skips the import), or 'exec' a fresh interpreter.",
    )
    max_awake: int = setting(
        0,
        "Most team instances awake at once; a wake beyond it first puts the least recently "
        "used idle team to sleep, and teams routed beyond it (new, or at a restart) start "
        "asleep. 0: no limit.",
    )
    replaced_table_days: float = setting(
        7.0,
        "Days a table replaced by an upload is kept, restorable from the dashboard.",
        positive=True,
    )
    trusted_proxies: str = setting(
        "", "Comma-separated peer IPs whose X-Forwarded-For is trusted (e.g. Traefik)."
    )
    # -- accounts (password reset and invitation mail) --
    smtp_host: str = setting("", "SMTP server for reset mail; empty = log the link instead.")
    smtp_port: int = setting(25, "Port of the SMTP server.")
    mail_from: str = setting("", "Sender of the gateway's mail; default gateway@<domain>.")
    # -- tenant integrity: sign-up limits and storage quota --
    signups_per_ip_hour: int = setting(
        5, "Successful registrations one client IP may make per hour; more get 429 (0 = no limit)."
    )
    signups_per_hour: int = setting(
        30, "Successful registrations the gateway accepts per hour in all; then 429 (0 = no limit)."
    )
    max_teams: int = setting(
        100,
        "Teams this host serves; at the limit sign-ups are closed (teams create --force may "
        "exceed it; 0 = no limit).",
    )
    team_quota_bytes: int = setting(
        1024**3, "Storage per team (volume plus uploads in progress); an upload past it gets 413."
    )
    # -- tenant integrity: teams one user may own --
    max_teams_per_user: int = setting(
        5,
        "Teams one user may own; making an owner beyond it is refused (the CLI's --force may "
        "exceed it; 0 = no limit).",
    )
    # -- deploys --
    deploy_timeout: float = setting(
        30.0, "Seconds a new instance has to become healthy in a deploy.", positive=True
    )
    deploy_parallel: int = setting(
        2, "Teams deployed at once by `gateway deploy --all`.", positive=True
    )
    max_pause: float = setting(
        30.0, "Longest a paused team's requests are held (seconds).", positive=True
    )
    # -- backups --
    backup_replica: str = setting(
        "",
        "Where Litestream replicates every database: a path, file:// or s3:// URL; "
        "'' = <data_dir>/../backups; 'off' = no replication.",
    )
    backup_retention: float = setting(
        24.0, "Hours of history kept for point-in-time restore.", positive=True
    )
    backup_sync_interval: float = setting(
        0.5,
        "Seconds between uploads of new changes to the replica (the RPO's main part).",
        positive=True,
    )
    # -- edge and operations (TLS without Traefik, admin listener, access log) --
    tls_cert: str = setting("", "PEM certificate (chain) file: serve HTTPS on the public port.")
    tls_key: str = setting("", "PEM private key file matching --tls-cert.")
    redirect_port: int = setting(
        0, "With TLS on: port of a plain-HTTP listener that redirects to HTTPS (0 = none)."
    )
    hsts_max_age: int = setting(
        31536000,
        "Strict-Transport-Security max-age (seconds) sent on HTTPS responses (0 = no header).",
    )
    # -- TLS from Traefik's ACME store (the gateway serves TLS, Traefik renews) --
    tls_acme_store: str = setting(
        "",
        "Traefik's acme.json: serve HTTPS with its certificate for <domain> and *.<domain>, "
        "reloaded on renewal (instead of --tls-cert/--tls-key).",
    )
    tls_acme_resolver: str = setting(
        "", "With --tls-acme-store: the certificate resolver to read ('' = any that has one)."
    )
    tls_acme_interval: float = setting(
        5.0,
        "With --tls-acme-store: seconds between checks of the store for a renewed certificate.",
        positive=True,
    )
    admin_host: str = setting("127.0.0.1", "Address the admin API listener binds to.")
    admin_port: int = setting(
        8001,
        "Port of the admin API listener (0 = any free port, recorded in <data_dir>/admin.json).",
    )
    admin_socket: str = setting("", "Unix socket path for the admin API instead of a TCP port.")
    admin_token: str = setting(
        "", "Bearer token of the admin API; generated once and kept in <data_dir>/admin.token."
    )
    access_log: str = setting("", "JSON access log: '' (off), '-' (stdout) or a file path.")
    # -- operator failure paths (unsent mail, free disk space) --
    unsent_mail: str = setting(
        "drop",
        "Mail without --smtp-host: 'drop' (log only that it was not sent) or 'log' (one line "
        "with its link: it is a live credential).",
    )
    min_free_mb: int = setting(
        256, "Free MiB in --data-dir below which /readyz is not ready and a warning is logged."
    )
    operators: str = setting(
        "",
        "Comma-separated e-mails allowed the operator pages, if the account's address is "
        "verified (made with `users create`); see `users grant-operator`.",
    )
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
        for name in (s.name for s in SETTINGS if s.positive):
            value = getattr(self, name)
            if not value > 0 or value != value or value == float("inf"):  # NaN and inf too
                raise ConfigError(f"{flag(name)} must be a positive number (got {value})")
        if self.min_free_mb < 0:
            raise ConfigError("--min-free-mb cannot be negative (0 turns the check off)")
        if not 0 <= self.idle_timeout < float("inf"):  # NaN fails too
            raise ConfigError(f"--idle-timeout must be 0 (never) or more (got {self.idle_timeout})")
        if self.local_start not in ("fork", "exec"):
            raise ConfigError(f"--local-start must be 'fork' or 'exec' (got {self.local_start!r})")
        if self.max_awake < 0:
            raise ConfigError("--max-awake cannot be negative (0 means no limit)")
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


def _settings() -> tuple[Setting, ...]:
    types = typing.get_type_hints(Config)
    return tuple(
        Setting(f.name, types[f.name], f.default, f.metadata["help"], f.metadata["positive"])
        for f in dataclasses.fields(Config)
        if "help" in f.metadata
    )


SETTINGS: tuple[Setting, ...] = _settings()


@dataclass(frozen=True)
class EnvOnly:
    variable: str
    default: str  # "" = unset
    help: str


# Read from the environment only, never flags: how the process is built and tested, not how it
# serves (docs/settings.md, "Environment only"; gateway/native.py, runtimes/docker/image.py).
ENV_ONLY: tuple[EnvOnly, ...] = (
    EnvOnly("GATEWAY_NATIVE", "1", "0 runs the hot path as pure Python."),
    EnvOnly("GATEWAY_REQUIRE_NATIVE", "", "1 makes a failed native build an error."),
    EnvOnly("GATEWAY_REQUIRE_DOCKER", "", "1 makes the Docker tests fail without an engine."),
    EnvOnly("GATEWAY_CACHE_DIR", "", "Where `gateway image build` caches its downloads."),
)


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
