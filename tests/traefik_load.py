"""A small load client for the edge: many HTTP/1.1 GETs over TLS, each outcome recorded.

Two kinds of worker, run together: ``fresh`` opens a new connection (and TLS handshake) per
request, as a crowd of new visitors does; ``keepalive`` reuses one connection for request
after request, as a browser does. A request counts as failed on any status other than the
expected one, a connection error, or a cut answer. Like browsers and HTTP/1.1 clients
(RFC 9112 section 9.3.1), a keep-alive worker whose reused connection is closed before ANY
byte of the answer sends the (idempotent) GET once more on a new connection: that is counted
in ``resent``, never hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    by_second: Counter[int] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class Cut(Exception):
    """The connection ended; ``started`` says whether any byte of the answer had arrived."""

    def __init__(self, started: bool) -> None:
        super().__init__("cut after the answer began" if started else "closed before answering")
        self.started = started


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, server keeps the connection)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Cut(bool(exc.partial)) from exc
    except (ConnectionError, ssl.SSLError) as exc:
        raise Cut(False) from exc
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    try:
        await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
        raise Cut(True) from exc
    return status, headers.get("connection", "").lower() != "close"


@dataclass
class Target:
    port: int
    host: str
    path: str
    expect: int
    tls: ssl.SSLContext | None

    def request(self, keep: bool) -> bytes:
        conn = "keep-alive" if keep else "close"
        head = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: {conn}\r\n\r\n"
        return head.encode()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            "127.0.0.1",
            self.port,
            ssl=self.tls,
            server_hostname=self.host if self.tls else None,
        )


def _record(tally: Tally, target: Target, status: int, t0: float) -> None:
    if status == target.expect:
        tally.ok += 1
    else:
        tally.failures[f"status {status}"] += 1
    tally.by_second[int(time.monotonic() - t0)] += 1


async def fresh(target: Target, tally: Tally, stop: asyncio.Event, t0: float) -> None:
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await target.connect()
            writer.write(target.request(keep=False))
            status, _ = await _answer(reader)
            _record(tally, target, status, t0)
        except Cut as exc:
            tally.failures[str(exc)] += 1
        except (OSError, ssl.SSLError) as exc:
            tally.failures[type(exc).__name__] += 1
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def keepalive(target: Target, tally: Tally, stop: asyncio.Event, t0: float) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while not stop.is_set():
        reused = conn is not None
        try:
            if conn is None:
                conn = await target.connect()
            reader, writer = conn
            writer.write(target.request(keep=True))
            status, keep = await _answer(reader)
            _record(tally, target, status, t0)
            if not keep:
                writer.close()
                conn = None
        except Cut as exc:
            conn = None
            if reused and not exc.started:
                tally.resent += 1  # the next loop sends it again on a new connection
                continue
            tally.failures[str(exc)] += 1
        except (OSError, ssl.SSLError) as exc:
            conn = None
            tally.failures[type(exc).__name__] += 1
    if conn is not None:
        conn[1].close()


async def run(
    targets: list[tuple[Target, str, int]],
    stop: asyncio.Event,
    limit: float,
    tallies: dict[str, Tally] | None = None,
) -> dict[str, Tally]:
    """Run ``count`` workers of ``kind`` per target until ``stop`` (at most ``limit`` s).

    ``tallies`` (filled as answers come) lets a caller watch the load while it runs."""
    t0 = time.monotonic()
    tallies = {} if tallies is None else tallies
    tasks = []
    for target, kind, count in targets:
        tally = tallies.setdefault(f"{kind} {target.port}", Tally())
        worker = fresh if kind == "fresh" else keepalive
        tasks += [asyncio.create_task(worker(target, tally, stop, t0)) for _ in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), limit)
    stop.set()
    await asyncio.gather(*tasks)
    return tallies


async def answered(tallies: dict[str, Tally], more: int, timeout: float = 60) -> None:
    """Until every worker kind has ``more`` answers beyond its count now (bounded): load
    before or after an operation, counted rather than timed."""
    goal = {name: tally.ok + more for name, tally in tallies.items()}
    deadline = time.monotonic() + timeout
    while any(tallies[name].ok < n for name, n in goal.items()):
        seen = {k: (t.ok, dict(t.failures)) for k, t in tallies.items()}
        assert time.monotonic() < deadline, f"the load stalled: {seen}"
        await asyncio.sleep(0.02)
