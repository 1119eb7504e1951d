"""The zero-downtime scenario with the real Traefik in front (``scenario.py --traefik``).

The same gateway, teams, traffic mix and operations as ``tests/load/scenario.py``, but every
request goes over TLS through Traefik, running the production ``certs/traefik.yml`` and
``certs/dynamic.yml`` as derived by ``tests/traefik_harness.py`` (the router's domain set to
the scenario's ``localhost``). After the deploys, ``deploy --all`` and ``gateway restart``,
one more operation runs under the load: ``gateway edge upgrade`` replaces Traefik itself by a
new process on the same ports (the same binary: the only version installed here).

The scenario's own requests are reused unchanged: its client is given a transport that sends
each ``http://127.0.0.1:<gateway port>`` request to Traefik's HTTPS port instead, with the
request's Host as the TLS server name, the chain verified against the dev CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.tls import make_dev_certs
from tests import traefik_harness as harness
from tests.load import scenario as base
from tests.systemd_gateway import listening_socket


class ThroughTraefik(httpx.AsyncHTTPTransport):
    """Every request to Traefik's HTTPS port; the Host header names the TLS server."""

    def __init__(self, port: int, tls: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(verify=tls, **kw)
        self.port = port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        server_name = request.headers["host"].rsplit(":", 1)[0]
        request.url = request.url.copy_with(scheme="https", host="127.0.0.1", port=self.port)
        request.extensions = {**request.extensions, "sni_hostname": server_name}
        return await super().handle_async_request(request)


async def drive(
    transport: ThroughTraefik,
    port: int,
    tokens: dict[str, str],
    rate: float,
    stop: asyncio.Event,
    run: base.Run,
    max_requests: int,
) -> None:
    """``scenario.drive``, with the client going through Traefik (same pacing and bounds)."""
    kinds = [k for w, k in base.MIX for _ in range(w)]
    slots = asyncio.Semaphore(base.MAX_IN_FLIGHT)
    async with httpx.AsyncClient(timeout=60, transport=transport) as client:
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for i in range(max_requests):
            if stop.is_set():
                break
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():
                run.client_waits += 1
            await slots.acquire()
            team = random.choice(base.TEAMS)
            kind = random.choice(kinds)
            task = asyncio.create_task(base.one(client, port, team, tokens[team], kind, run))
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda _: slots.release())
        await asyncio.gather(*pending)


async def upgrade_traefik(traefik: harness.Traefik, work: Path, run: base.Run) -> int:
    """``gateway edge upgrade`` through the real CLI; returns the new Traefik's pid."""
    pid_file = work / "traefik.pid"
    pid_file.write_text(f"{traefik.proc.pid}\n")
    cmd = [sys.executable, "-m", "gateway", "edge", "upgrade"]
    cmd += ["--traefik-binary", str(harness.traefik_binary()), "--config", str(traefik.static_path)]
    cmd += ["--pid-file", str(pid_file), "--work-dir", str(work / "upgrade")]
    t0 = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, timeout=120, check=False
    )
    run.ops.append(("traefik upgrade", done.returncode, time.monotonic() - t0))
    base.say(f"traefik upgrade: {'ok' if done.returncode == 0 else 'FAILED'}")
    if done.returncode:
        print(f"  traefik upgrade failed: {done.stdout}{done.stderr}", file=sys.stderr)
        return traefik.proc.pid
    await asyncio.to_thread(traefik.proc.wait, 60)  # the old one finished its requests
    return int(pid_file.read_text())


def _stop_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:  # gone, or a zombie (the upgrade's child, reparented when the CLI exited)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (OSError, IndexError):
            return
        time.sleep(0.1)


async def scenario(
    *, rate: float, warmup: float, cooldown: float, deploys: int, work_dir: Path | None = None
) -> dict[str, Any]:
    tmp = Path(work_dir or tempfile.mkdtemp(prefix="gateway-load-edge-"))
    public = listening_socket()  # bound here, passed on: no free-port-then-bind race
    data_dir, port = tmp / "data", public.getsockname()[1]
    base.say(f"preparing {len(base.TEAMS)} teams in {tmp}")
    tokens = base.prepare(data_dir, port)
    proc = base.start_gateway(data_dir, public, tmp / "gateway.log")
    run = base.Run()
    certs = make_dev_certs("localhost", tmp / "certs")
    traefik: harness.Traefik | None = None
    traefik_pid = 0
    try:
        await base.wait_ready(data_dir, port)
        traefik = await asyncio.to_thread(
            harness.start_for_gateway, port, certs, tmp / "traefik", None, "localhost"
        )
        traefik_pid = traefik.proc.pid
        tls = ssl.create_default_context(cafile=str(certs.ca))
        # The chain is verified, the host name not: OpenSSL refuses a wildcard right under a
        # single label (*.localhost). tests/test_traefik_https.py checks names on example.org.
        tls.check_hostname = False
        # Idle connections expire well before Traefik's (and the gateway's) idle timeouts.
        limits = httpx.Limits(
            max_connections=64, max_keepalive_connections=32, keepalive_expiry=base.KEEPALIVE_EXPIRY
        )
        transport = ThroughTraefik(traefik.ports.websecure, tls, limits=limits)
        base.say(f"gateway on {port}, Traefik on {traefik.ports.websecure}; {rate:.0f} req/s")
        stop = asyncio.Event()
        run.marks["load_start"] = time.monotonic()
        load = asyncio.create_task(
            drive(transport, port, tokens, rate, stop, run, max_requests=100_000)
        )
        await asyncio.sleep(warmup)
        run.marks["ops_start"] = time.monotonic()
        await base.operate(data_dir, port, deploys, run, proc)
        traefik_pid = await upgrade_traefik(traefik, tmp, run)
        run.marks["ops_end"] = time.monotonic()
        base.say("operations done; cooling down")
        await asyncio.sleep(cooldown)
        stop.set()
        await load
        run.marks["load_end"] = time.monotonic()
    finally:
        if traefik is not None:
            traefik.stop()
        if traefik_pid:
            _stop_pid(traefik_pid)
        base._stop_all(data_dir, proc)
    result = base.summarize(run, base.exactly_once(data_dir, run))
    result["log"] = str(tmp / "gateway.log")
    if work_dir is None and not result["failures_by_kind"]:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
