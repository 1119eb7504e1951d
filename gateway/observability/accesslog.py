"""The structured access log: one JSON object per request, one line each.

It bypasses ``logging`` on purpose: a LogRecord, its handler lock and its formatter cost more
than the request they describe. ``write`` formats one JSON line into a 64 KiB buffered
stream; the buffer is flushed when full and at most ``FLUSH_EVERY`` seconds after a line, so a
quiet gateway's log is still current. Off unless ``access_log`` is set ('-' = stdout).

Fields: ``ts`` (unix time), ``id`` (the X-Request-ID sent upstream), ``team``, ``method``,
``path``, ``status``, ``ms`` (duration), ``target``, ``retries``, ``client`` (the client's
address: the peer, or when the peer is a trusted proxy the address it forwarded).
"""

from __future__ import annotations

import os
import time
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import IO, Any

from gateway.forwarded import client_ip

FLUSH_EVERY = 1.0
BUFFER = 64 * 1024
_esc = encode_basestring_ascii  # a JSON string literal, escaped in C; one line whatever the path


class AccessLog:
    def __init__(self, stream: IO[str], trusted: frozenset[str] = frozenset()) -> None:
        self.stream = stream
        self.trusted = trusted
        self._last_flush = time.monotonic()

    def write(
        self,
        scope: dict[str, Any],
        team: str,
        status: int,
        seconds: float,
        now: float,
    ) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        if peer in self.trusted:  # behind Traefik: who Traefik says connected to it
            peer = client_ip(scope, self.trusted)
        rid = scope.get("request_id")
        target = scope.get("target")
        # An f-string, not json.dumps of a dict: ~5x cheaper (benchmarks/observability.py);
        # every string still goes through json's own escaper, so each line is valid JSON.
        line = (
            f'{{"ts":{time.time():.3f},'
            f'"id":{_esc(rid.decode("latin-1")) if rid else "null"},'
            f'"team":{_esc(team) if team else "null"},'
            f'"method":{_esc(scope.get("method", ""))},'
            f'"path":{_esc(scope.get("path", ""))},'
            f'"status":{status:d},"ms":{seconds * 1000:.2f},'
            f'"target":{_esc(target) if target else "null"},'
            f'"retries":{scope.get("retries", 0):d},'
            f'"client":{_esc(peer) if peer else "null"}}}'
        )
        self.stream.write(line + "\n")
        if now - self._last_flush > FLUSH_EVERY:
            self._last_flush = now
            self.stream.flush()

    def close(self) -> None:
        try:
            self.stream.flush()
        finally:
            if self.stream.fileno() > 2:
                self.stream.close()


def open_access_log(where: str, trusted: frozenset[str] = frozenset()) -> AccessLog | None:
    """'' -> None (off); '-' -> stdout (a private buffered copy of fd 1); else append to a file."""
    if not where:
        return None
    if where == "-":
        return AccessLog(os.fdopen(os.dup(1), "w", buffering=BUFFER, encoding="utf-8"), trusted)
    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    return AccessLog(open(path, "a", buffering=BUFFER, encoding="utf-8"), trusted)
