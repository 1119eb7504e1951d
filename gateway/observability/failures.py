"""What kind of failure an answered error was, for metrics: one name per series.

Denials (401, 403), unknown hosts and upstream failures (by the ``UpstreamError`` kind that
caused a 502/504) are each their own series in /metrics (``prom.py``); other errors keep their
status code as their kind.
"""

from __future__ import annotations

from gateway.errors import HTTPError, UnknownHost
from gateway.http.upstream import UpstreamError

UNKNOWN_HOST = "unknown_host"
DENIED = ("401", "403")
# UpstreamError kinds (gateway/http/upstream.py), counted as upstream failures.
UPSTREAM = frozenset(
    ("connect", "connect_timeout", "reset", "read_timeout", "protocol", "truncated", "aborted")
)


def failure_kind(err: HTTPError) -> str:
    if isinstance(err, UnknownHost):
        return UNKNOWN_HOST
    cause = err.__cause__
    if isinstance(cause, UpstreamError) and cause.kind in UPSTREAM:
        return cause.kind
    return str(err.status)
