"""What happens to a deleted team's data: it never changes hands.

Deleting a team moves its volume from ``<data_dir>/teams/<slug>`` to
``<data_dir>/archive/<slug>.<UTC time>.<random>``. No slug maps there (a slug has no dots, and
only ``teams/<slug>`` is ever served), so whoever takes the name next starts with an empty
volume. The move happens inside the transaction that deletes the team's rows: a registration
of the same name waits for that write lock, so it can never see the old directory. The
team's instance secret goes too, so cookies its old Datasette signed mean nothing to the new
one. ``--purge`` removes the archive at once; otherwise an operator can restore it by hand
(docs/auth.md) or purge it later.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.store import Store

ARCHIVE_DIR = "archive"


class ArchiveNotFound(GatewayError):
    """No archived team by that name."""


@dataclass(frozen=True)
class Archived:
    name: str
    slug: str
    deleted_at: float
    path: Path
    size: int


def archive_dir(config: Config) -> Path:
    return config.data_dir / ARCHIVE_DIR


def delete_team(config: Config, store: Store, slug: str, *, purge: bool = False) -> Path | None:
    """Delete ``slug``'s rows and retire its volume; returns the archive (None if purged or
    the team never had a volume)."""
    source = config.teams_dir / slug
    name = f"{slug}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{secrets.token_hex(3)}"
    target = archive_dir(config) / name
    moved = False

    def retire(conn: sqlite3.Connection) -> None:
        nonlocal moved
        conn.execute("DELETE FROM settings WHERE key = ?", [f"instance_secret:{slug}"])
        if source.exists():
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            source.rename(target)  # same file system: atomic, and instant
            moved = True
            conn.execute(
                "INSERT INTO archived_teams (name, slug, deleted_at) VALUES (?, ?, ?)",
                [name, slug, time.time()],
            )

    store.delete_team(slug, retire)
    if not moved:
        return None
    if purge:
        purge_archive(config, store, name)
        return None
    return target


def archived(config: Config, store: Store) -> list[Archived]:
    rows = store.query("SELECT * FROM archived_teams ORDER BY deleted_at")
    out = []
    for r in rows:
        path = archive_dir(config) / r["name"]
        out.append(Archived(r["name"], r["slug"], r["deleted_at"], path, disk_usage(path)))
    return out


def purge_archive(config: Config, store: Store, name: str) -> None:
    with store.transaction() as conn:
        if not conn.execute("DELETE FROM archived_teams WHERE name = ?", [name]).rowcount:
            raise ArchiveNotFound(f"there is no archived team {name!r}")
    shutil.rmtree(archive_dir(config) / name, ignore_errors=True)


def disk_usage(path: Path) -> int:
    """Bytes under ``path`` (0 when missing); archives count toward the host's disk use."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
