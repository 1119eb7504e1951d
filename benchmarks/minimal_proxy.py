"""A yardstick, not a product: the least a Python reverse proxy can do per request.

    python benchmarks/minimal_proxy.py PORT UPSTREAM_PORT

One asyncio protocol with httptools, one task per request, the gateway's own upstream client
(``gateway/http/upstream.py``) and nothing else: no routing, auth, retries, header hygiene,
metrics or error pages, and no ASGI. ``proxy.py --minimal`` and ``instructions.py`` run it
beside nginx and the gateway, so the gap between the gateway and nginx splits into what
Python itself costs (this row) and what the gateway's features cost (the rest).
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

from gateway.http.upstream import Pool, build_head

STATUS = {200: b"HTTP/1.1 200 OK\r\n"}
DROPPED = frozenset({b"connection", b"date", b"keep-alive", b"transfer-encoding"})


class Client(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        self.loop.create_task(self.handle(method, self.url, self.headers))

    async def handle(self, method: str, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        host = next((v for n, v in headers if n == b"host"), b"")
        out = [(n, v) for n, v in headers if n != b"host"]
        out += [(b"host", host), (b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-host", host)]
        conn = await self.pool.acquire(5)
        conn.begin(build_head(method, url, out), is_head=method == "HEAD")
        status, upstream_headers = await conn.response(60)
        parts = [STATUS.get(status) or b"HTTP/1.1 %d \r\n" % status]
        parts += [b"%s: %s\r\n" % (n, v) for n, v in upstream_headers if n not in DROPPED]
        parts.append(b"\r\n")
        while chunk := await conn.read(60):
            parts.append(chunk)
        self.transport.write(b"".join(parts))
        conn.finish()


async def main(port: int, upstream_port: int) -> None:
    pool = Pool("127.0.0.1", upstream_port, idle_timeout=60)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
