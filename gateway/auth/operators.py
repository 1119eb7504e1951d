"""Who is an operator: a role granted in the control store, never an email string alone.

An account is an operator when ``users.operator`` is set (``gateway users create --operator``,
``gateway users grant-operator EMAIL``), or when its address is listed in the ``operators``
setting *and* the address is verified. Self-registered addresses are never verified (there is
no mail verification), so registering ``DESK@example.org`` or ``des\\u212a@example.org`` next to an
operator ``desk@example.org`` gains nothing; accounts created with the CLI are vouched for.
Comparisons use ``accounts.canonical_email`` on both sides.
"""

from __future__ import annotations

from gateway.auth.accounts import canonical_email, user_by_id
from gateway.config import Config
from gateway.store import Store


def listed(config: Config) -> frozenset[str]:
    return frozenset(canonical_email(e) for e in config.operators.split(",") if e.strip())


def is_operator(store: Store, config: Config, user_id: str) -> bool:
    user = user_by_id(store, user_id)
    if user is None or user.disabled:
        return False
    if user.operator:
        return True
    return user.email_verified and canonical_email(user.email) in listed(config)
