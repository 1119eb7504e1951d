"""The structured access log: one JSON object per request, one line each.

It bypasses ``logging`` on purpose: a LogRecord, its handler lock and its formatter cost more
than the request they describe. ``write`` formats one JSON line into a 64 KiB buffered
stream; the buffer is flushed when full, and a timer armed by the first line after a flush
flushes it ``FLUSH_EVERY`` seconds later, so a quiet gateway's log is current within a second.
Off unless ``access_log`` is set ('-' = stdout). ``reopen()`` (SIGUSR1) reopens a file after
logrotate moved it.

Fields: ``ts`` (unix time), ``id`` (the X-Request-ID sent upstream), ``team``, ``method``,
``path``, ``status``, ``ms`` (duration), ``target``, ``retries``, ``client`` (the client's
address: the peer, or when the peer is a trusted proxy the address it forwarded).
Secrets never reach it: the token in a reset, invitation or handoff path is replaced by
``<redacted>``, and the query string is not logged at all (``ticket=`` and the like live there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import IO, Any

from gateway.context import RequestContext
from gateway.forwarded import client_ip

FLUSH_EVERY = 1.0
BUFFER = 64 * 1024
_esc = encode_basestring_ascii  # a JSON string literal, escaped in C; one line whatever the path
# Paths whose last segment is a bearer secret (gateway/auth: reset and invitation links).
SECRET_PREFIXES = ("/reset/", "/invite/")
REDACTED = "<redacted>"


def redact(path: str) -> str:
    """``path`` with the secret segment of a reset or invitation link replaced."""
    for prefix in SECRET_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + REDACTED
    return path


class AccessLog:
    def __init__(
        self, stream: IO[str], trusted: frozenset[str] = frozenset(), path: Path | None = None
    ) -> None:
        self.stream = stream
        self.trusted = trusted
        self.path = path  # None for stdout: nothing to reopen
        self._timer: asyncio.TimerHandle | None = None

    def write(
        self,
        scope: dict[str, Any],
        ctx: RequestContext,
        status: int,
        seconds: float,
        now: float,
    ) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        if peer in self.trusted:  # behind Traefik: who Traefik says connected to it
            peer = client_ip(scope, self.trusted)
        rid = ctx.request_id
        target = ctx.target
        team = ctx.team
        # An f-string, not json.dumps of a dict: far cheaper (benchmarks/observability.py);
        # every string still goes through json's own escaper, so each line is valid JSON.
        line = (
            f'{{"ts":{time.time():.3f},'
            f'"id":{_esc(rid.decode("latin-1")) if rid else "null"},'
            f'"team":{_esc(team) if team else "null"},'
            f'"method":{_esc(scope.get("method", ""))},'
            f'"path":{_esc(redact(scope.get("path", "")))},'
            f'"status":{status:d},"ms":{seconds * 1000:.2f},'
            f'"target":{_esc(target) if target else "null"},'
            f'"retries":{ctx.retries:d},'
            f'"client":{_esc(peer) if peer else "null"}}}'
        )
        self.stream.write(line + "\n")
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop (a synchronous caller)
            self._timer = asyncio.get_running_loop().call_later(FLUSH_EVERY, self.flush)
            return
        self.flush()

    def flush(self) -> None:
        self._timer = None
        with contextlib.suppress(OSError, ValueError):  # a full disk must not fail requests
            self.stream.flush()

    def reopen(self) -> None:
        """Open the file again by its name (logrotate moved the old one away): SIGUSR1."""
        if self.path is None:
            return
        self.flush()
        old, self.stream = self.stream, _open(self.path)
        with contextlib.suppress(OSError):
            old.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
    path = Path(where).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return AccessLog(_open(path), trusted, path)


def _open(path: Path) -> IO[str]:
    return open(path, "a", buffering=BUFFER, encoding="utf-8")
