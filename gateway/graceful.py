"""Graceful keep-alive on shutdown (the old process of `gateway restart`, or SIGTERM).

uvicorn closes idle keep-alive connections the moment it shuts down. A client may have a
request on the wire at that instant: it sees the connection close with no answer, the race
every server has when it closes an idle connection. Here an idle connection is kept for a
short grace instead: a request that arrives is served, with ``Connection: close``, and the
client reconnects (to the successor, which holds the same listening socket). Only a
connection that stays idle through the whole grace is closed, as a keep-alive timeout would.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SHUTDOWN_IDLE_GRACE = 1.0  # seconds; well above a loopback or LAN round trip


class GracefulHttpToolsProtocol(HttpToolsProtocol):
    _draining = False

    def shutdown(self) -> None:
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                SHUTDOWN_IDLE_GRACE, self.timeout_keep_alive_handler
            )
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close
