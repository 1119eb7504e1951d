"""The edge in front of the gateway (Traefik): upgrading it in place with no failed request.

``steer`` points a port's SO_REUSEPORT group at one of its listeners, ``traefik_config`` reads
the static config and derives the new process's, ``upgrade`` runs the handover, ``cli`` is
``gateway edge``.
"""
