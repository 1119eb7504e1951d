"""Signing keys: one secret generated on first start, plus fallbacks for rotation.

itsdangerous signs with the LAST key of the list and accepts any of them, so rotation is:
move the current secret into ``auth_secret_fallbacks``, generate a new one
(``gateway users rotate-secret``); drop a fallback to retire it, which rejects everything it
signed. Every purpose has its own salt, so a reset token can never pass as a session cookie.
"""

from __future__ import annotations

import secrets

from itsdangerous import URLSafeTimedSerializer

from gateway.store import Store

SECRET = "auth_secret"
FALLBACKS = "auth_secret_fallbacks"  # space-separated, oldest first
SALTS = {
    "session": "gateway.session",
    "csrf": "gateway.csrf",
    "reset": "gateway.reset",
    "invite": "gateway.invite",
}


def load_keys(store: Store) -> list[str]:
    # Read first: this runs whenever another process writes the store, and ensure_setting
    # would take the write lock every time.
    current = store.setting(SECRET) or store.ensure_setting(
        SECRET, lambda: secrets.token_urlsafe(48)
    )
    fallbacks = (store.setting(FALLBACKS) or "").split()
    return [*fallbacks, current]


def serializers(keys: list[str]) -> dict[str, URLSafeTimedSerializer]:
    return {purpose: URLSafeTimedSerializer(keys, salt=salt) for purpose, salt in SALTS.items()}


def rotate(store: Store, keep: int = 1) -> None:
    """Make a new secret; keep the newest ``keep`` old ones as fallbacks (0 retires all)."""
    with store.transaction() as conn:
        row = conn.execute("SELECT value FROM settings WHERE key = ?", [SECRET]).fetchone()
        old = conn.execute("SELECT value FROM settings WHERE key = ?", [FALLBACKS]).fetchone()
        fallbacks = (old["value"].split() if old else []) + ([row["value"]] if row else [])
        fallbacks = fallbacks[-keep:] if keep > 0 else []
        conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
            [SECRET, secrets.token_urlsafe(48)],
        )
        conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
            [FALLBACKS, " ".join(fallbacks)],
        )
