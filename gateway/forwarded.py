"""Who the client is: the TCP peer, or, when that peer is a trusted proxy (Traefik), the
rightmost ``X-Forwarded-For`` hop that is not one of our proxies. One definition, used by the
sign-in throttle and the access log alike."""

from __future__ import annotations

from typing import Any


def client_ip(scope: dict[str, Any], trusted: frozenset[str]) -> str:
    client = scope.get("client")
    peer = client[0] if client else ""
    if peer not in trusted:
        return peer
    forwarded = ""
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded = (forwarded + "," if forwarded else "") + value.decode("latin-1")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    # Walk from the right: the first hop that is not one of our proxies is the client.
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return peer
