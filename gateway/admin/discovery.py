"""How the CLI finds and authenticates to a running gateway's admin API.

The token is ``admin_token`` when set, else one generated on first start; the control store
keeps only its sha256 (``settings.admin_token_sha256``). A running gateway writes it to
``<data_dir>/admin.token`` (mode 0600) and its listening address to ``<data_dir>/admin.json``,
so ``gateway status`` on the same machine, as the same user, needs no flags.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.store import Store

TOKEN_FILE = "admin.token"
HASH_KEY = "admin_token_sha256"
LEGACY_KEY = "admin_token"  # older stores kept the token itself (hashed on first start)
ADDRESS_FILE = "admin.json"


@dataclass(frozen=True)
class AdminAddress:
    url: str  # http://127.0.0.1:8001 (for a unix socket: http://admin, sent over the socket)
    socket: str | None
    token: str


def admin_token(config: Config, store: Store) -> str:
    token = config.admin_token or _generated_token(config, store)
    _write_private(config.data_dir / TOKEN_FILE, token + "\n")
    return token


def token_matches(config: Config, store: Store, given: str) -> bool:
    """Is ``given`` the admin token? Compared by hash: the store never holds the token."""
    if config.admin_token:
        return hmac.compare_digest(given.encode(), config.admin_token.encode())
    stored = store.setting(HASH_KEY)
    return stored is not None and hmac.compare_digest(_hash(given), stored)


def _generated_token(config: Config, store: Store) -> str:
    """The generated token lives only in <data_dir>/admin.token (0600); the control store
    keeps its sha256. An older store's plain token is hashed and removed on first start; a
    lost token file means a new token."""
    with store.transaction() as conn:
        row = conn.execute("SELECT value FROM settings WHERE key = ?", [LEGACY_KEY]).fetchone()
        if row is not None:
            token = str(row["value"])
            conn.execute("DELETE FROM settings WHERE key = ?", [LEGACY_KEY])
            _set(conn, _hash(token))
            return token
        row = conn.execute("SELECT value FROM settings WHERE key = ?", [HASH_KEY]).fetchone()
        try:
            kept = (config.data_dir / TOKEN_FILE).read_text().strip()
        except OSError:
            kept = ""
        if row is not None and kept and hmac.compare_digest(_hash(kept), str(row["value"])):
            return kept
        token = secrets.token_urlsafe(32)
        _set(conn, _hash(token))
        return token


def _set(conn: sqlite3.Connection, value: str) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [HASH_KEY, value],
    )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def publish(config: Config, host: str, port: int | None, socket_path: str | None) -> None:
    """Record where the admin API listens; called once its socket is bound."""
    if socket_path:
        info = {"url": "http://admin", "socket": socket_path, "pid": os.getpid()}
    else:
        shown = f"[{host}]" if ":" in host else host
        info = {"url": f"http://{shown}:{port}", "socket": None, "pid": os.getpid()}
    # The public address too: a CLI run without the gateway's own flags (say, --port) still
    # tells the user where a new team really is.
    info["public_url"] = config.base_url
    _write_private(config.data_dir / ADDRESS_FILE, json.dumps(info) + "\n")


def unpublish(config: Config) -> None:
    """Remove our address, unless a successor (``gateway restart``) already published its own."""
    path = config.data_dir / ADDRESS_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if info.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def find_admin(config: Config) -> AdminAddress | None:
    """The running gateway's admin API, or None when no address was published."""
    try:
        info = json.loads((config.data_dir / ADDRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    token = config.admin_token
    if not token:
        try:
            token = (config.data_dir / TOKEN_FILE).read_text().strip()
        except OSError:
            return None
    return AdminAddress(str(info["url"]), info.get("socket"), token)


def running_base_url(config: Config) -> str:
    """The running gateway's apex URL as it published it, else this config's."""
    try:
        info = json.loads((config.data_dir / ADDRESS_FILE).read_text())
    except (OSError, ValueError):
        return config.base_url
    url = info.get("public_url")
    return str(url) if isinstance(url, str) and url else config.base_url


class NoGatewayData(GatewayError):
    pass


def existing_store(config: Config) -> Store:
    """The control store of ``config.data_dir`` for a command that only reads: never created
    as a side effect (a CLI run from the wrong directory says so instead)."""
    from gateway.store import open_store

    if not config.control_db.exists():
        raise NoGatewayData(
            f"no gateway data in {config.data_dir}: give the --data-dir (or GATEWAY_DATA_DIR) "
            "that `gateway serve` uses"
        )
    return open_store(config.control_db)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
