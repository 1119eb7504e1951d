"""The zero-downtime scenario in the fast shape (``scenario.py --gateway-tls``).

The gateway serves HTTPS itself with the certificate Traefik keeps in its ACME store
(``GATEWAY_TLS_ACME_STORE``, as ``certs/gateway-tls/gateway.env`` sets it; no proxy in front),
and every request of ``tests/load/scenario.py`` goes over TLS straight to it
(``scenario.Https``). The store is an ``acme.json`` in Traefik's format with a ``gateway certs
dev`` certificate (tests/acme_support.py: no ACME CA can be reached from here).

After the deploys, ``deploy --all``, ``gateway restart`` (the successor reads the same store)
and the restore, one more operation runs under the load: a certificate renewal, written as
Traefik writes it, in place: first caught half-written (the gateway must keep serving the
current certificate), then whole. It succeeds once fresh handshakes get the new certificate.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509

from tests import acme_support
from tests.load import scenario as base

DOMAIN = "localhost"  # the scenario's teams are <team>.localhost
KEPT = "TLS certificate not reloaded (keeping the current one)"  # the gateway's log line


def peer_serial(port: int, tls: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        tls.wrap_socket(raw, server_hostname=DOMAIN) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)


class GatewayTls(base.Edge):
    """HTTPS from the gateway itself, its certificate from Traefik's store, renewed under load."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval  # GATEWAY_TLS_ACME_INTERVAL: how often the store is looked at
        self.work = Path()
        self.port = 0
        self.store = Path()
        self.serial = 0
        self.tls = ssl.create_default_context()  # the dev CA's, once prepare() made it

    def prepare(self, work: Path, port: int) -> dict[str, str]:
        self.work, self.port = work, port
        self.store = work / "traefik" / "acme.json"
        self.store.parent.mkdir(parents=True)
        certs, chain, key, self.serial = acme_support.issue(DOMAIN, work / "certs")
        acme_support.write_in_place(self.store, acme_support.wildcard_store(DOMAIN, chain, key))
        self.tls = ssl.create_default_context(cafile=str(certs.ca))
        # The chain is verified, the host name not: OpenSSL refuses a wildcard right under a
        # single label (*.localhost). tests/test_gateway_tls_files.py checks names on example.org.
        self.tls.check_hostname = False
        return {
            "GATEWAY_TLS_ACME_STORE": str(self.store),
            "GATEWAY_TLS_ACME_RESOLVER": "letsencrypt",
            "GATEWAY_TLS_ACME_INTERVAL": str(self.interval),
        }

    def to_gateway(self) -> httpx.AsyncBaseTransport | None:
        return base.Https(self.port, self.tls)

    async def operate(self, run: base.Run) -> None:
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(self.renew)
            rc = 0
        except (AssertionError, OSError) as exc:
            print(f"  certificate renewal failed: {exc}", flush=True)
            rc = 1
        run.ops.append(("certificate renewal", rc, time.monotonic() - t0))
        base.say(f"certificate renewal: {'ok' if rc == 0 else 'FAILED'}")

    def renew(self, timeout: float = 30) -> None:
        """Traefik's renewal, in place; returns once fresh handshakes get the new certificate."""
        log = self.work / "gateway.log"
        kept = log.read_text(errors="replace").count(KEPT)
        _, chain, key, serial = acme_support.issue(DOMAIN, self.work / "certs")
        renewed = acme_support.wildcard_store(DOMAIN, chain, key)
        acme_support.write_in_place(self.store, renewed[: len(renewed) // 2])
        deadline = time.monotonic() + timeout
        while log.read_text(errors="replace").count(KEPT) == kept:  # the gateway saw it
            assert time.monotonic() < deadline, "the half-written store was never looked at"
            time.sleep(0.05)
        assert peer_serial(self.port, self.tls) == self.serial, "a half-written store was used"
        acme_support.write_in_place(self.store, renewed)
        while (now := peer_serial(self.port, self.tls)) != serial:
            assert now == self.serial, f"served serial {now:x}, neither the old nor the new"
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.05)
        for _ in range(5):  # from now on, every fresh handshake
            assert peer_serial(self.port, self.tls) == serial
        self.serial = serial
