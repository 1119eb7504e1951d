"""Server-side sessions behind a signed cookie, with an in-memory cache.

The cookie carries ``sign(random id)``; SQLite keeps ``sha256(id)`` with the user, the
absolute expiry and the idle timeout, so a session can be revoked and a stolen database row
cannot be replayed as a cookie.

Timeouts (documented in docs/auth.md):
  * ordinary session: idle 2 h, absolute 12 h, cookie dies with the browser;
  * "remember me": idle 14 days, absolute 30 days, persistent cookie.

Per request: one cookie-value lookup in ``_cache`` (a verified cookie string -> entry), two
float comparisons. The cache is cleared on every auth write in this process (``clear``) and
whenever another process (the CLI) commits to the store, seen through ``data_version``;
either way revocation holds on the very next request. ``last_seen`` reaches SQLite at most
once a minute per session.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

from itsdangerous import BadData, URLSafeTimedSerializer

from gateway.auth import accounts
from gateway.store import Store

IDLE, ABSOLUTE = 2 * 3600.0, 12 * 3600.0
REMEMBER_IDLE, REMEMBER_ABSOLUTE = 14 * 86400.0, 30 * 86400.0
TOUCH_EVERY = 60.0


@dataclass
class Session:
    id_hash: str
    user_id: str
    email: str
    teams: dict[str, str]  # slug -> role
    expires_at: float
    idle: float
    last_seen: float
    remember: bool
    touched: float = 0.0
    actors: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # team -> signed


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, store: Store, signer: URLSafeTimedSerializer) -> None:
        self.store = store
        self.signer = signer
        self._cache: dict[str, Session | None] = {}  # verified cookie value -> session/None

    def set_signer(self, signer: URLSafeTimedSerializer) -> None:
        self.signer = signer
        self._cache.clear()

    def clear(self) -> None:
        self._cache.clear()

    # -- create / revoke ------------------------------------------------------------------
    def create(self, user_id: str, remember: bool = False) -> tuple[str, float | None]:
        """A fresh random id at every login (no fixation). Returns (cookie value, max_age)."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        idle, absolute = (REMEMBER_IDLE, REMEMBER_ABSOLUTE) if remember else (IDLE, ABSOLUTE)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (id_hash, user_id, created_at, last_seen, expires_at,"
                " idle, remember) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [_hash(session_id), user_id, now, now, now + absolute, idle, int(remember)],
            )
        return self.signer.dumps(session_id), (absolute if remember else None)

    def revoke(self, id_hash: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", [id_hash])
        self.clear()

    def revoke_user(self, user_id: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])
        self.clear()

    # -- lookup ---------------------------------------------------------------------------
    def get(self, cookie: str) -> Session | None:
        """The live session behind a cookie value, or None. Never raises for bad input."""
        try:
            session = self._cache[cookie]
        except KeyError:
            session = self._load(cookie)
            if len(self._cache) > 100_000:  # bound memory against cookie floods
                self._cache.clear()
            self._cache[cookie] = session
        if session is None:
            return None
        now = time.time()
        if now > session.expires_at or now - session.last_seen > session.idle:
            self._expire(cookie, session)
            return None
        session.last_seen = now
        if now - session.touched > TOUCH_EVERY:
            session.touched = now
            with self.store.transaction() as conn:
                conn.execute(
                    "UPDATE sessions SET last_seen = ? WHERE id_hash = ?", [now, session.id_hash]
                )
        return session

    def _load(self, cookie: str) -> Session | None:
        try:
            session_id = self.signer.loads(cookie, max_age=int(REMEMBER_ABSOLUTE))
        except (BadData, UnicodeError, ValueError):
            return None  # tampered, retired key, wrong purpose, too old: anonymous
        if not isinstance(session_id, str):
            return None
        id_hash = _hash(session_id)
        rows = self.store.query(
            "SELECT sessions.*, users.email, users.disabled FROM sessions"
            " JOIN users ON users.id = sessions.user_id WHERE id_hash = ?",
            [id_hash],
        )
        if not rows or rows[0]["disabled"]:
            return None
        r = rows[0]
        return Session(
            id_hash,
            r["user_id"],
            r["email"],
            accounts.memberships(self.store, r["user_id"]),
            r["expires_at"],
            r["idle"],
            r["last_seen"],
            bool(r["remember"]),
            touched=time.time(),
        )

    def _expire(self, cookie: str, session: Session) -> None:
        self._cache[cookie] = None
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", [session.id_hash])
