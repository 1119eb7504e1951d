"""Retry policy: when a failed upstream attempt may be tried again, and what the client is
told when it may not (docs/reliability.md).

  * nothing was sent (refused, connect timeout): any method, once, on another target if any;
  * a *reused* keep-alive connection closed before any response byte: GET/HEAD/OPTIONS once,
    and only when the whole body is held in the replay buffer;
  * a fresh connection reset, a read timeout, or anything after a response byte: never.

One deadline covers all attempts (the exchange in ``routing/proxy.py`` keeps it).
"""

from __future__ import annotations

from typing import Final

from gateway.errors import BadGateway, GatewayTimeout, HTTPError
from gateway.http.upstream import UpstreamError

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})

# verdict()'s answers; the two "not" cases are counted apart (gateway_proxy_* metrics).
RETRY: Final = 0
NEVER: Final = 1
NOT_IDEMPOTENT: Final = 2  # a reused connection failed, but the method is not idempotent
BODY_NOT_HELD: Final = 3  # allowed by the rules, but the body was not held for a replay


def verdict(err: UpstreamError, method: str, held: bool) -> int:
    """May the attempt that failed with ``err`` be retried (``held``: the whole body is in
    the replay buffer)?"""
    if err.kind in ("connect", "connect_timeout"):
        return RETRY  # nothing was sent: safe for every method; the held prefix replays
    if err.kind == "reset" and err.reused:
        if method not in IDEMPOTENT:
            return NOT_IDEMPOTENT
        if not held:
            return BODY_NOT_HELD
        return RETRY
    return NEVER


def status_for(err: UpstreamError) -> HTTPError:
    """Map an upstream failure (before any response byte) to the client's status."""
    if err.kind == "aborted":
        return GatewayTimeout("the instance stopped before it answered (drain timeout)")
    if err.kind in ("read_timeout", "connect_timeout"):
        return GatewayTimeout("the team's instance did not answer in time")
    if err.kind == "connect":
        return BadGateway("the team's instance is unreachable")
    return BadGateway("the team's instance closed the connection without answering")
