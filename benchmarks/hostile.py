"""Normal traffic while hostile clients attack: do the listener limits hold (issue 12)?

    python benchmarks/hostile.py [--slowloris 2000] [--big-headers 20] [--stalled 20]
                                 [--seconds 8] [--max-wait 60] [--baseline-src DIR]

One real gateway (``serve_gateway.py``, the production uvicorn settings and default limits) in
front of nginx's ``return 200``. wrk loads the public team at 10 connections for ``--seconds``
before, during and after an attack made of:

  slowloris    connections that send "GET / HTTP/1.1", one header line start, then one byte a
               second (a head that never completes): ``header_timeout`` should close them
  big headers  senders of an unterminated 8 MiB header value: ``max_header_bytes`` (431)
  stalled      requests that announce a 10 MiB body, send 100 KiB and stop (past the replay
               buffer: the proxy is streaming it upstream): ``body_idle_timeout`` (408)

The attackers connect from 127.0.0.2 and up, at most 200 connections per address, so the
per-IP cap (256) does not refuse them first: the deadlines and size limits are what is
measured. Printed: wrk p50/p99 before/during/after (target: p99 during <= 2x before); how long
each kind of attacker stayed connected (target: its deadline + 1 s); the gateway's RSS growth
(target < 50 MB); its open fds after, against before (target: back to the baseline).

``--baseline-src DIR`` runs the same attack against the gateway in another source tree (say a
``git archive`` of an older commit) and prints it side by side; there an attacker still
connected after ``--max-wait`` seconds is cut by the benchmark and shown as ">max-wait".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    TEAM,
    TEAM_HOST,
    Processes,
    WrkResult,
    free_port,
    nginx_upstream_conf,
    require_tools,
    run_wrk,
    start_nginx,
    wait_http,
)

from gateway.config import Config

HERE = Path(__file__).resolve().parent
PER_ADDRESS = 200  # attackers per source address, under the default per-IP cap of 256
DEFAULTS = Config()
# fds are counted once wrk's connections are gone and the upstream pool's idle connections
# (kept pool_idle_timeout) are closed.
SETTLE = DEFAULTS.pool_idle_timeout + 1.0


@dataclass
class Attacker:
    kind: str
    lifetime: float = 0.0
    answer: str = ""  # the status it got, "closed" (no answer) or "cut" (the benchmark gave up)


@dataclass
class Run:
    label: str
    before: WrkResult | None = None
    during: WrkResult | None = None
    after: WrkResult | None = None
    attackers: list[Attacker] = field(default_factory=list)
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    fds_before: int = 0
    fds_after: int = 0
    connect_failures: int = 0
    client_lag: float = 0.0


# -- the gateway process ---------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- attackers ---------------------------------------------------------------------------------
def source(i: int) -> str:
    return f"127.0.0.{2 + i // PER_ADDRESS}"


async def attack(kind: str, port: int, address: str, max_wait: float, run: Run) -> Attacker:
    loop = asyncio.get_running_loop()
    me = Attacker(kind)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0)), 30
        )
    except (OSError, TimeoutError):
        run.connect_failures += 1
        me.answer = "no connect"
        return me
    started = loop.time()  # the gateway's deadlines run from its accept, not our connect()
    sender = asyncio.ensure_future(_send(kind, writer))
    received = b""
    try:
        async with asyncio.timeout(max_wait):
            while chunk := await reader.read(65536):
                received += chunk[: 64 - len(received)] if len(received) < 64 else b""
        me.answer = received.split(b" ", 2)[1].decode() if received else "closed"
    except TimeoutError:
        me.answer = "cut"
    except OSError:
        me.answer = "reset"
    me.lifetime = loop.time() - started
    sender.cancel()
    with contextlib.suppress(BaseException):
        await sender
    writer.close()
    return me


async def _send(kind: str, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        if kind == "slowloris":
            writer.write(f"GET / HTTP/1.1\r\nHost: {TEAM_HOST}\r\nX-Slow: ".encode())
            while True:
                await asyncio.sleep(1.0)
                writer.write(b"a")
                await writer.drain()
        elif kind == "big headers":
            writer.write(f"GET / HTTP/1.1\r\nHost: {TEAM_HOST}\r\nX-Big: ".encode())
            piece = b"v" * 65536
            for _ in range(128):  # 8 MiB, never terminated
                writer.write(piece)
                await writer.drain()
        else:  # stalled
            # A GET with a body: the public team proxies it, so the stall reaches the upstream.
            writer.write(
                f"GET /upload HTTP/1.1\r\nHost: {TEAM_HOST}\r\n"
                "Content-Length: 10485760\r\n\r\n".encode()
            )
            writer.write(b"x" * 102_400)
            await writer.drain()
        await asyncio.sleep(3600)  # then silence until the gateway acts


async def scenario(port: int, pid: int, args: argparse.Namespace, run: Run) -> None:
    def wrk() -> WrkResult:
        return run_wrk(port, "/", connections=10, duration=args.seconds, host=TEAM_HOST)

    run.before = await asyncio.to_thread(wrk)
    await asyncio.sleep(SETTLE)
    run.rss_before_mb = run.rss_peak_mb = rss_mb(pid)
    run.fds_before = open_fds(pid)

    async def sample() -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(OSError):
                run.rss_peak_mb = max(run.rss_peak_mb, rss_mb(pid))
            before = loop.time()
            await asyncio.sleep(0.25)
            # Our own loop's lateness: it delays when an attacker notices its close.
            run.client_lag = max(run.client_lag, loop.time() - before - 0.25)

    sampler = asyncio.ensure_future(sample())
    kinds = [
        ("slowloris", args.slowloris),
        ("big headers", args.big_headers),
        ("stalled", args.stalled),
    ]
    tasks = []
    i = 0
    for kind, count in kinds:
        for _ in range(count):
            tasks.append(asyncio.ensure_future(attack(kind, port, source(i), args.max_wait, run)))
            i += 1
    await asyncio.sleep(2.0)  # they are connected and sending
    run.during = await asyncio.to_thread(wrk)
    run.attackers = list(await asyncio.gather(*tasks))
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await asyncio.sleep(2.0)  # closes settle (the gateway lingers 2 s after a refusal)
    run.after = await asyncio.to_thread(wrk)
    await asyncio.sleep(SETTLE)
    run.fds_after = open_fds(pid)


def measure(label: str, src: Path | None, args: argparse.Namespace, tmp: Path) -> Run:
    run = Run(label)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with Processes(tmp) as procs:
        up_port, gw_port = free_port(), free_port()
        conf = nginx_upstream_conf(tmp, up_port, 1)
        upstream = start_nginx(procs, tmp, f"upstream-{label}", conf)
        wait_http(up_port, proc=upstream)
        script = (src / "benchmarks" if src else HERE) / "serve_gateway.py"
        gateway = procs.start(
            f"gateway-{label}",
            [
                *(sys.executable, str(script), "--data-dir", str(tmp / f"gw-{label}")),
                *("--port", str(gw_port), "--team", TEAM, "--static", f"127.0.0.1:{up_port}"),
            ],
            env=env,
        )
        wait_http(gw_port, host=TEAM_HOST, proc=gateway)
        asyncio.run(scenario(gw_port, gateway.pid, args, run))
    return run


# -- report ------------------------------------------------------------------------------------
def deadline_of(kind: str) -> float:
    if kind == "slowloris":
        return DEFAULTS.header_timeout
    if kind == "stalled":
        return DEFAULTS.body_idle_timeout
    return 0.0  # a size limit acts as the bytes arrive


def report(runs: list[Run], max_wait: float) -> str:
    lines = []
    for run in runs:
        lines.append(f"\n== {run.label}")
        lines.append(f"  {'normal load (wrk -c10)':<24} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9}")
        for phase in ("before", "during", "after"):
            r: WrkResult | None = getattr(run, phase)
            if r is not None:
                bad = f"   ({r.bad} errors)" if r.bad else ""
                lines.append(f"  {phase:<24} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.rps:>9,.0f}{bad}")
        if run.before and run.during:
            ratio = run.during.p99_ms / run.before.p99_ms
            ok = "ok" if ratio <= 2 else "MISSED"
            lines.append(f"  p99 during / before: {ratio:.2f}x (target <= 2x: {ok})")
        lines.append(
            f"  {'attackers':<14} {'n':>5} {'deadline':>9} {'p50 s':>7} {'max s':>7}"
            f" {'in time':>8}  answers"
        )
        for kind in ("slowloris", "big headers", "stalled"):
            group = [a for a in run.attackers if a.kind == kind]
            if not group:
                continue
            times = [a.lifetime for a in group if a.answer not in ("no connect",)]
            limit = deadline_of(kind) + 1.0
            in_time = sum(1 for a in group if a.answer != "cut" and a.lifetime <= limit)
            answers: dict[str, int] = {}
            for a in group:
                answers[a.answer] = answers.get(a.answer, 0) + 1
            worst = max(times) if times else 0.0
            worst_text = f">{max_wait:.0f}" if any(a.answer == "cut" for a in group) else ""
            lines.append(
                f"  {kind:<14} {len(group):>5} {deadline_of(kind):>8.0f}s"
                f" {statistics.median(times) if times else 0:>7.2f}"
                f" {worst_text or f'{worst:.2f}':>7} {in_time:>4}/{len(group):<4} "
                + ", ".join(f"{k} x{v}" for k, v in sorted(answers.items()))
            )
        growth = run.rss_peak_mb - run.rss_before_mb
        ok = "ok" if growth < 50 else "MISSED"
        lines.append(
            f"  RSS {run.rss_before_mb:.0f} MB -> peak {run.rss_peak_mb:.0f} MB"
            f" (+{growth:.0f} MB, target < 50: {ok})"
        )
        ok = "ok" if run.fds_after <= run.fds_before + 2 else "MISSED"
        lines.append(f"  open fds {run.fds_before} before, {run.fds_after} after ({ok})")
        lines.append(f"  the attackers' own event loop ran up to {run.client_lag:.2f} s late")
        if run.connect_failures:
            lines.append(f"  {run.connect_failures} attackers could not connect")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slowloris", type=int, default=2000)
    parser.add_argument("--big-headers", type=int, default=20)
    parser.add_argument("--stalled", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0, help="each wrk phase")
    parser.add_argument("--max-wait", type=float, default=60.0, help="cut an attacker after")
    parser.add_argument("--baseline-src", type=Path, help="another source tree to compare")
    args = parser.parse_args()
    require_tools()
    total = args.slowloris + args.big_headers + args.stalled
    if total > PER_ADDRESS * 250:
        parser.error(f"at most {PER_ADDRESS * 250} attackers (127.0.0.2-251)")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        if args.baseline_src is not None:
            runs.append(measure("baseline", args.baseline_src.resolve(), args, Path(tmp)))
        runs.append(measure("gateway", None, args, Path(tmp)))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"hostile clients vs normal load, {started}; attackers: {total}")
    print(report(runs, args.max_wait))


if __name__ == "__main__":
    main()
