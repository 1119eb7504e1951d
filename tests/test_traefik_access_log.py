"""Traefik's access log as shipped in ``certs/traefik.yml``, in the real Traefik.

It keeps only what the gateway's own access log cannot show or what needs a look: 5xx answers
(the gateway down or failing), retried and slow requests; the gateway logs every request it
answers. Behind Traefik here: a small real HTTP server standing in for the gateway (the
subject is Traefik's log, not the gateway), then nothing at all on that port (gateway down).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gateway.tls import client_context, make_dev_certs
from tests import traefik_harness as harness
from tests.edge import PinnedTransport

DOMAIN = "example.org"


class Backend(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 500 if self.path == "/fail" else 200
        body = b"failed\n" if status == 500 else b"ok\n"
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()  # a no-op once the test has stopped it
    server.server_close()


async def test_only_failures_reach_the_access_log(
    tmp_path: Path, backend: ThreadingHTTPServer
) -> None:
    certs = make_dev_certs(DOMAIN, tmp_path / "certs")
    work = tmp_path / "traefik"
    port = backend.server_address[1]
    traefik = await asyncio.to_thread(harness.start_for_gateway, port, certs, work)
    log = work / "access.log"
    try:
        transport = PinnedTransport(verify=client_context(certs.ca))
        base = f"https://{DOMAIN}:{traefik.ports.websecure}"
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            for _ in range(20):
                assert (await client.get(f"{base}/ok")).status_code == 200
            assert (await client.get(f"{base}/fail")).status_code == 500
            await asyncio.to_thread(backend.shutdown)
            backend.server_close()  # the gateway is down: only Traefik can log this
            assert (await client.get(f"{base}/down")).status_code == 502
        deadline = time.monotonic() + 20  # the buffer is written by a goroutine
        while "/down" not in (text := log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, f"no line for /down in {text!r}"
            await asyncio.sleep(0.1)
        lines = text.splitlines()
        assert any('"GET /fail HTTP/1.1" 500' in line for line in lines), lines
        assert any('"GET /down HTTP/1.1" 502' in line for line in lines), lines
        assert not [line for line in lines if "/ok" in line]
    finally:
        traefik.stop()
    assert traefik.errors() == []
