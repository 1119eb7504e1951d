"""Reading an invitation link: which team it opens, for whom, and whether it still works.

Shared by the invitation page (gateway/auth/views_teams.py) and registration through an
invitation (views_account.py), so both accept exactly the same links.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from itsdangerous import BadData, URLSafeTimedSerializer

from gateway.auth import accounts

if TYPE_CHECKING:
    from gateway.store import Store


@dataclass(frozen=True)
class Invite:
    id: str
    team: str
    role: str
    inviter: str  # the inviting owner's email, shown to the invited colleague


def pending(store: Store, signer: URLSafeTimedSerializer, token: str) -> Invite | None:
    """The invitation behind a link's token (``signer``: Auth's "invite" serializer), or None
    when it is invalid, used or expired."""
    try:
        invite_id = signer.loads(token, max_age=accounts.INVITE_LIFETIME)
    except (BadData, UnicodeError, ValueError):
        return None
    rows = store.query(
        "SELECT invites.*, users.email AS inviter FROM invites"
        " LEFT JOIN users ON users.id = invites.created_by WHERE invites.id = ?",
        [str(invite_id)],
    )
    row = rows[0] if rows else None
    if row is None or row["used_at"] is not None or row["expires_at"] < time.time():
        return None
    return Invite(row["id"], row["team"], row["role"], row["inviter"] or "a team owner")
