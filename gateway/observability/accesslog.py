"""The structured access log: one JSON object per request, one line each.

It bypasses ``logging`` on purpose: a LogRecord, its handler lock and its formatter cost more
than the request they describe. ``write`` does one ``json.dumps`` into a 64 KiB buffered
stream; the buffer is flushed when full and at most ``FLUSH_EVERY`` seconds after a line, so a
quiet gateway's log is still current. Off unless ``access_log`` is set ('-' = stdout).

Fields: ``ts`` (unix time), ``id`` (the X-Request-ID sent upstream), ``team``, ``method``,
``path``, ``status``, ``ms`` (duration), ``target``, ``retries``, ``client`` (peer address).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

FLUSH_EVERY = 1.0
BUFFER = 64 * 1024
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class AccessLog:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
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
        rid = scope.get("request_id", b"")
        line = _dumps(
            {
                "ts": round(time.time(), 3),
                "id": rid.decode("latin-1") if rid else None,
                "team": team or None,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "ms": round(seconds * 1000, 2),
                "target": scope.get("target"),
                "retries": scope.get("retries", 0),
                "client": client[0] if client else None,
            }
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


def open_access_log(where: str) -> AccessLog | None:
    """'' -> None (off); '-' -> stdout (a private buffered copy of fd 1); else append to a file."""
    if not where:
        return None
    if where == "-":
        return AccessLog(os.fdopen(os.dup(1), "w", buffering=BUFFER, encoding="utf-8"))
    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    return AccessLog(open(path, "a", buffering=BUFFER, encoding="utf-8"))
