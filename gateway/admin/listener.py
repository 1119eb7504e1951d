"""Bind the admin listener and build its server (see ``gateway/admin/__init__.py``)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from gateway.admin.discovery import admin_token, publish
from gateway.admin.listener_app import build_admin_app
from gateway.listeners import AuxServer, aux_config, bind_tcp, bind_unix
from gateway.restart import Sockets

if TYPE_CHECKING:
    from gateway.admin.parts import AdminParts


def admin_listener(
    gw: AdminParts, sockets: Sockets | None = None
) -> tuple[AuxServer, list[socket.socket]]:
    """Bind the admin socket, publish its address for the CLI, and build its server."""
    config = gw.config
    token = admin_token(config, gw.store)
    app = build_admin_app(gw, token)
    sockets = sockets or Sockets()
    if config.admin_socket:
        sock = sockets.get("admin", lambda: bind_unix(config.admin_socket))
        publish(config, "", None, config.admin_socket)
    else:
        sock = sockets.get(
            "admin", lambda: bind_tcp(config.admin_host, config.admin_port, "--admin-port")
        )
        publish(config, config.admin_host, sock.getsockname()[1], None)
    return AuxServer(aux_config(app, config)), [sock]
