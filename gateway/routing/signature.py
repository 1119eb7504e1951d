"""The gateway's signature on every request it sends to an instance, health checks included.

An instance listens on a loopback port (local runtime) or a published one (Docker); any
process on the host can reach it. So each instance answers only requests that carry
``x-gateway-signature``: a timestamped HMAC made with that instance's own secret (the one
Datasette gets as ``DATASETTE_SECRET``), checked by ``gateway/instance/gateway_plugin.py``.
Anything else gets 403 from the instance itself.

Signing costs more than the rest of a request's routing, so one value per team is reused
for ``TTL`` seconds (the instance accepts ``MAX_AGE``): per request this is one dict lookup
and one float comparison. The gateway strips client-sent ``x-gateway-*`` headers, so a client
never sees or sets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from itsdangerous import TimestampSigner

HEADER = b"x-gateway-signature"
SALT = "gateway-request"  # the instance plugin verifies with the same salt
TTL = 60.0
MAX_AGE = 300  # what the instance accepts (gateway_plugin.py); well above TTL

Header = tuple[bytes, bytes]


class RequestSigner:
    def __init__(self, secret_for: Callable[[str], str]) -> None:
        self._secret_for = secret_for
        self._cache: dict[str, tuple[float, Header]] = {}
        # Read once: fetching a secret takes the store's write lock (ensure_setting).
        self._signers: dict[str, TimestampSigner] = {}

    def header(self, team: str) -> Header:
        now = time.monotonic()
        cached = self._cache.get(team)
        if cached is None or cached[0] <= now:
            signer = self._signers.get(team)
            if signer is None:
                signer = TimestampSigner(self._secret_for(team), salt=SALT)
                self._signers[team] = signer
            cached = (now + TTL, (HEADER, signer.sign(team.encode())))
            self._cache[team] = cached
        return cached[1]

    def forget(self) -> None:
        """A team's secret may have changed (deleted, then created again): sign afresh."""
        self._cache.clear()
        self._signers.clear()


def sign_with(secret: str, team: str) -> Header:
    """One signature from a known secret (the CLI, when no gateway runs)."""
    return HEADER, TimestampSigner(secret, salt=SALT).sign(team.encode())
