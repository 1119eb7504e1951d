"""Per-team API tokens, sent as ``Authorization: Bearer gwt_...``.

Only ``sha256(token)`` is stored; the token itself is shown once, at creation. A token belongs
to one team and one user (its actor), may expire, can be revoked, and records when it was
last used (written at most once a minute so a busy client does not write per request).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from gateway.auth import accounts
from gateway.store import Store

PREFIX = "gwt_"
TOUCH_EVERY = 60.0


@dataclass
class Token:
    id: str
    team: str
    user_id: str
    email: str
    name: str
    created_at: float
    expires_at: float | None
    last_used: float | None
    revoked_at: float | None

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


_SELECT = (
    "SELECT api_tokens.*, users.email, users.disabled FROM api_tokens"
    " JOIN users ON users.id = api_tokens.user_id"
)


def _token(row: sqlite3.Row) -> Token:
    return Token(
        row["id"],
        row["team"],
        row["user_id"],
        row["email"],
        row["name"],
        row["created_at"],
        row["expires_at"],
        row["last_used"],
        row["revoked_at"],
    )


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, Token | None] = {}
        self._touched: dict[str, float] = {}

    def clear(self) -> None:
        self._cache.clear()

    def create(self, team: str, user_id: str, name: str, expires_in: float | None = None) -> str:
        raw = PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO api_tokens (id, team, user_id, name, token_hash, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    "t_" + secrets.token_hex(6),
                    team,
                    user_id,
                    name[:100],
                    _hash(raw),
                    now,
                    now + expires_in if expires_in else None,
                ],
            )
        return raw

    def revoke(self, team: str, token_id: str) -> bool:
        with self.store.transaction() as conn:
            done = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND team = ?"
                " AND revoked_at IS NULL",
                [time.time(), token_id, team],
            ).rowcount
        self.clear()
        return bool(done)

    def list(self, team: str) -> list[Token]:
        rows = self.store.query(_SELECT + " WHERE team = ? ORDER BY created_at DESC", [team])
        return [_token(r) for r in rows]

    def _member(self, row: sqlite3.Row) -> bool:
        # The same membership check as a session's (accounts.memberships): a token lives only
        # while its user is an enabled member of its team. The cache is emptied on every
        # membership change (Auth.changed), so removal ends the token on the next request.
        if row["disabled"]:
            return False
        return row["team"] in accounts.memberships(self.store, row["user_id"])

    def check(self, raw: str, team: str) -> Token | None:
        """The live token for ``team``, or None (unknown, revoked, expired, other team, or
        its user is disabled or no longer a member)."""
        try:
            token = self._cache[raw]
        except KeyError:
            rows = self.store.query(_SELECT + " WHERE token_hash = ?", [_hash(raw)])
            token = _token(rows[0]) if rows and self._member(rows[0]) else None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[raw] = token
        now = time.time()
        if token is None or token.team != team or not token.live(now):
            return None
        if now - self._touched.get(token.id, 0.0) > TOUCH_EVERY:
            self._touched[token.id] = now
            token.last_used = now
            with self.store.transaction() as conn:
                conn.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", [now, token.id])
        return token
