"""Which gateway source files one proxied request runs through, and the code's shape figures.

    python benchmarks/request_files.py [--shape]

Starts the real gateway in-process (the production uvicorn settings, a ``StaticRuntime`` team
in front of a tiny asyncio upstream on loopback), sends one warm-up request, then traces the
next one with ``sys.setprofile`` and lists every ``gateway/`` file whose Python code ran while
it was in flight. The compiled modules are turned off (``GATEWAY_NATIVE=0``) so that every
call is seen; the files are the same, only faster.

``--shape`` also prints the figures docs/architecture.md quotes: import circles, the longest
function and the largest module under ``gateway/`` (counted with ``ast``, as
tests/test_architecture.py does).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

os.environ["GATEWAY_NATIVE"] = "0"  # before gateway is imported: trace the Python sources

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import uvicorn  # noqa: E402
from serve_gateway import build  # noqa: E402

from gateway.server import uvicorn_config  # noqa: E402

PACKAGE = ROOT / "gateway"
BODY = b'{"ok": true}'


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(head % len(BODY) + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the gateway closed its pooled connection
    writer.close()


async def request(port: int, host: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /data.json HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def trace_one(data_dir: Path) -> set[str]:
    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    app = build(data_dir, 0, "bench", f"127.0.0.1:{up_port}")
    server = uvicorn.Server(uvicorn_config(app, app.config))
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        for _ in range(3):  # warm up: the route table, the pool, the auth caches
            assert (await request(port, "bench.localhost")).startswith(b"HTTP/1.1 200")
        seen: set[str] = set()

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call":
                seen.add(frame.f_code.co_filename)

        sys.setprofile(profile)
        try:
            answer = await request(port, "bench.localhost")
        finally:
            sys.setprofile(None)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        up.close()
    return seen


def gateway_files(seen: set[str]) -> list[str]:
    files = {Path(f).resolve() for f in seen}
    return sorted(str(f.relative_to(ROOT)) for f in files if f.is_relative_to(PACKAGE))


def shape() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_architecture import circles, import_graph

    print(f"import circles: {len(circles(import_graph(PACKAGE)))}")
    longest: list[tuple[int, str]] = []
    sizes: list[tuple[int, str]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_native" in path.parts:
            continue
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        sizes.append((len(text.splitlines()), rel))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                span = (node.end_lineno or node.lineno) - node.lineno + 1
                longest.append((span, f"{rel}:{node.lineno} {node.name}"))
    for label, rows in (("longest functions", longest), ("largest modules", sizes)):
        print(f"{label}:")
        for n, where in sorted(rows, reverse=True)[:5]:
            print(f"  {n:5d}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", action="store_true", help="also print circles and sizes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = gateway_files(asyncio.run(trace_one(Path(tmp))))
    print(f"gateway files one proxied request runs through: {len(files)}")
    for f in files:
        print(f"  {f}")
    if args.shape:
        shape()


if __name__ == "__main__":
    main()
