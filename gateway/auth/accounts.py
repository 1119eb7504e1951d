"""Users, memberships and invites in the control store (migration 2).

Plain functions over ``Store``: the web pages, the CLI and the per-request check share them.
Every write that can change who may see what returns normally; callers in the gateway process
then invalidate the session cache (``Auth.changed``), and a CLI write is caught through
SQLite's ``data_version``.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
import unicodedata
from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.store import Store

EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})\.[A-Za-z]{2,63}$")
ROLES = ("owner", "member")


class AccountError(GatewayError):
    """A user's mistake on an account form or command: the message is shown as is."""


class TooManyTeams(AccountError):
    """The user already owns ``max_teams_per_user`` teams: making them owner of one more is
    refused (the CLI's ``--force`` passes ``max_owned=0``)."""

    def __init__(self, owned: int, limit: int) -> None:
        super().__init__(
            f"This account already owns {_teams(owned)}, the most one account may own here. "
            "Leave one of them or ask an operator."
        )
        self.owned = owned
        self.limit = limit


def _teams(n: int) -> str:
    return f"{n} team{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str
    disabled: bool
    created_at: float
    operator: bool = False
    email_verified: bool = False


def canonical_email(raw: str) -> str:
    """The one form used for uniqueness and every comparison: NFKC, then casefold of the
    whole address (so ``DESK@`` and ``des\u212a@``, with a Kelvin sign, are ``desk@``)."""
    return unicodedata.normalize("NFKC", raw.strip()).casefold()


def normalize_email(raw: str) -> str:
    """Check an address given at registration (or to the CLI) and return its canonical form.

    Letter case is folded, but an address that only NFKC or a special case fold changes
    (compatibility characters, a Kelvin sign, ``ß``) is refused: it can only be a lookalike.
    """
    email = raw.strip()
    if len(email) > 254 or not EMAIL.match(email):
        raise AccountError("Please enter a valid email address, like name@example.org.")
    if unicodedata.normalize("NFKC", email) != email or email.casefold() != email.lower():
        raise AccountError(
            "This email address contains lookalike characters; please type it in plain form."
        )
    return canonical_email(email)


def _user(r: sqlite3.Row) -> User:
    return User(
        r["id"],
        r["email"],
        r["password_hash"],
        bool(r["disabled"]),
        r["created_at"],
        bool(r["operator"]),
        bool(r["email_verified"]),
    )


def user_by_email(store: Store, email: str) -> User | None:
    rows = store.query("SELECT * FROM users WHERE email = ?", [canonical_email(email)])
    return _user(rows[0]) if rows else None


def user_by_id(store: Store, user_id: str) -> User | None:
    rows = store.query("SELECT * FROM users WHERE id = ?", [user_id])
    return _user(rows[0]) if rows else None


def users(store: Store) -> list[User]:
    return [_user(r) for r in store.query("SELECT * FROM users ORDER BY email")]


def create_user(
    store: Store,
    email: str,
    password_hash: str,
    team: str | None = None,
    *,
    verified: bool = False,
    operator: bool = False,
) -> User:
    """Create a user (and, with ``team``, that team with them as owner) in one transaction.

    ``verified``: an operator vouches for the address (``gateway users create``)."""
    user = User(
        "u_" + secrets.token_hex(8), email, password_hash, False, time.time(), operator, verified
    )
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM users WHERE email = ?", [email]).fetchone():
            raise AccountError(f"there is already an account for {email}")
        if (
            team is not None
            and conn.execute("SELECT 1 FROM teams WHERE slug = ?", [team]).fetchone()
        ):
            raise AccountError(
                f"the team name {team!r} is taken; please choose another. To join that team, "
                "ask one of its owners for an invitation link."
            )
        conn.execute(
            "INSERT INTO users (id, email, password_hash, created_at, operator, email_verified)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [user.id, email, password_hash, user.created_at, int(operator), int(verified)],
        )
        if team is not None:
            conn.execute(
                "INSERT INTO teams (slug, created_at) VALUES (?, ?)", [team, user.created_at]
            )
            conn.execute(
                "INSERT INTO memberships (team, user_id, role, created_at) VALUES (?, ?, ?, ?)",
                [team, user.id, "owner", user.created_at],
            )
    return user


def set_password(store: Store, user_id: str, password_hash: str, *, revoke: bool = True) -> None:
    """Store a new hash; a changed password revokes every session (reliability.md)."""
    with store.transaction() as conn:
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", [password_hash, user_id])
        if revoke:
            conn.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])


def set_disabled(store: Store, user_id: str, disabled: bool) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE users SET disabled = ? WHERE id = ?", [int(disabled), user_id])
        if disabled:
            conn.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])


def set_operator(store: Store, user_id: str, operator: bool) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE users SET operator = ? WHERE id = ?", [int(operator), user_id])


# -- memberships --------------------------------------------------------------------------
def memberships(store: Store, user_id: str) -> dict[str, str]:
    rows = store.query("SELECT team, role FROM memberships WHERE user_id = ?", [user_id])
    return {r["team"]: r["role"] for r in rows}


def members(store: Store, team: str) -> list[tuple[User, str]]:
    rows = store.query(
        "SELECT users.*, memberships.role AS role FROM memberships"
        " JOIN users ON users.id = memberships.user_id WHERE team = ? ORDER BY users.email",
        [team],
    )
    return [(_user(r), r["role"]) for r in rows]


def check_owner_cap(conn: sqlite3.Connection, user_id: str, team: str, max_owned: int) -> None:
    """The one check of ``max_teams_per_user`` (0 = no limit), run inside the write
    transaction that would make ``user_id`` an owner of ``team``, so two at once cannot both
    pass. Already owning ``team`` is no new team."""
    if not max_owned:
        return
    owned = conn.execute(
        "SELECT count(*) FROM memberships WHERE user_id = ? AND role = 'owner' AND team != ?",
        [user_id, team],
    ).fetchone()[0]
    if owned >= max_owned:
        raise TooManyTeams(owned, max_owned)


def add_member(
    store: Store, team: str, user_id: str, role: str = "member", *, max_owned: int = 0
) -> None:
    """Add ``user_id`` to ``team`` or change their role; ``max_owned``: max_teams_per_user."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    with store.transaction() as conn:
        if not conn.execute("SELECT 1 FROM teams WHERE slug = ?", [team]).fetchone():
            raise AccountError(f"there is no team {team!r}")
        if role == "owner":
            check_owner_cap(conn, user_id, team, max_owned)
        conn.execute(
            "INSERT INTO memberships (team, user_id, role, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(team, user_id) DO UPDATE SET role = excluded.role",
            [team, user_id, role, time.time()],
        )


def remove_member(store: Store, team: str, user_id: str) -> None:
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT role FROM memberships WHERE team = ? AND user_id = ?", [team, user_id]
        ).fetchone()
        if row is None:
            raise AccountError("that user is not a member of this team")
        if row["role"] == "owner":
            owners = conn.execute(
                "SELECT count(*) FROM memberships WHERE team = ? AND role = 'owner'", [team]
            ).fetchone()[0]
            if owners <= 1:
                raise AccountError("a team needs at least one owner; add another owner first")
        conn.execute("DELETE FROM memberships WHERE team = ? AND user_id = ?", [team, user_id])
        # For good: re-adding the user later must not bring old tokens back to life.
        conn.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE team = ? AND user_id = ?"
            " AND revoked_at IS NULL",
            [time.time(), team, user_id],
        )


def set_public(store: Store, team: str, public: bool) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE teams SET public = ? WHERE slug = ?", [int(public), team])


# -- invites ------------------------------------------------------------------------------
INVITE_LIFETIME = 7 * 86400


def create_invite(store: Store, team: str, created_by: str, role: str = "member") -> str:
    invite_id = secrets.token_urlsafe(12)
    now = time.time()
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO invites (id, team, created_by, role, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [invite_id, team, created_by, role, now, now + INVITE_LIFETIME],
        )
    return invite_id


def use_invite(store: Store, invite_id: str, user_id: str, *, max_owned: int = 0) -> str:
    """Consume an invite once: returns the team joined, or raises AccountError.

    An owner invitation counts toward ``max_owned`` (max_teams_per_user); refused, the
    link stays unused."""
    now = time.time()
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM invites WHERE id = ?", [invite_id]).fetchone()
        if row is None or row["used_at"] is not None or row["expires_at"] < now:
            raise AccountError("This invitation link has expired or was already used.")
        member = conn.execute(
            "SELECT 1 FROM memberships WHERE team = ? AND user_id = ?", [row["team"], user_id]
        ).fetchone()
        if row["role"] == "owner" and member is None:  # a member keeps their role (DO NOTHING)
            check_owner_cap(conn, user_id, row["team"], max_owned)
        conn.execute(
            "UPDATE invites SET used_at = ?, used_by = ? WHERE id = ?", [now, user_id, invite_id]
        )
        conn.execute(
            "INSERT INTO memberships (team, user_id, role, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(team, user_id) DO NOTHING",
            [row["team"], user_id, row["role"], now],
        )
        return str(row["team"])
