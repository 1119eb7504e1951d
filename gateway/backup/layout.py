"""Where backups live: each database the gateway owns, its replica URL, and the daemon's files.

Every replica sits under one root (``backup_replica``): ``<root>/control`` for the control
store and ``<root>/teams/<slug>/<created>`` for each team's ``data.db``, one replica per team
*lifetime* (``<created>``: the team's creation time in microseconds). A deleted team's replica
stays where it was, so it can still be listed and restored, and a later team of the same name
never writes into it nor restores from it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.errors import ConfigError

CONTROL = "control"
SOCKET_MAX = 100  # AF_UNIX paths are limited to 108 bytes


@dataclass(frozen=True)
class Database:
    name: str  # CONTROL, or a team's slug
    path: Path
    replica: str  # Litestream replica URL

    @property
    def is_control(self) -> bool:
        return self.name == CONTROL


class Layout:
    def __init__(self, config: Config) -> None:
        self.config = config
        raw = config.backup_replica.strip()
        self.enabled = raw.lower() != "off"
        self.root = replica_root(config.data_dir, raw) if self.enabled else ""
        self.state_dir = config.data_dir / "litestream"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "litestream.yml"

    @property
    def daemon_file(self) -> Path:
        """The daemon's pid and the pid of the gateway that owns it (JSON)."""
        return self.state_dir / "daemon.json"

    @property
    def owner_lock(self) -> Path:
        """Held shared by every gateway supervising the daemon (gateway/backup/watchdog.py)."""
        return self.state_dir / "owner.lock"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "litestream.log"

    @property
    def socket(self) -> Path:
        path = self.state_dir / "control.sock"
        if len(str(path)) <= SOCKET_MAX:
            return path
        digest = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"gateway-litestream-{digest}.sock"

    def control(self) -> Database:
        return Database(CONTROL, self.config.control_db, join_url(self.root, CONTROL))

    def team_path(self, slug: str) -> Path:
        return self.config.teams_dir / slug / "data.db"

    def team(self, slug: str, created_at: float) -> Database:
        replica = join_url(self.root, f"teams/{slug}/{lifetime(created_at)}")
        return Database(slug, self.team_path(slug), replica)


def lifetime(created_at: float) -> str:
    """The replica folder of one team's lifetime: its creation time, in microseconds."""
    return str(round(created_at * 1_000_000))


def replica_root(data_dir: Path, raw: str) -> str:
    if not raw:
        return (data_dir.parent / "backups").absolute().as_uri()
    if "://" not in raw:
        return Path(raw).expanduser().absolute().as_uri()
    scheme = raw.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"backup_replica {raw!r}: unknown scheme {scheme!r} "
            f"(use a path, or one of {', '.join(sorted(SCHEMES))})"
        )
    return raw


# The replica types Litestream 0.5 accepts as URLs.
SCHEMES = frozenset({"file", "s3", "gs", "abs", "sftp", "webdav", "webdavs", "nats", "oss"})


def join_url(root: str, sub: str) -> str:
    """``s3://bucket/prefix?endpoint=...`` + ``teams/x``: the path grows, the query stays."""
    base, sep, query = root.partition("?")
    return f"{base.rstrip('/')}/{sub}{sep}{query}"


def file_path(url: str) -> Path | None:
    """The local directory of a file:// replica (None for remote ones)."""
    if not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(url).path))
