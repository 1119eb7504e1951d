"""The zero-downtime scenario with the real Traefik in front (``scenario.py --traefik``).

The same gateway, teams, traffic mix and operations as ``tests/load/scenario.py``, but every
request goes over TLS through Traefik, running the production ``certs/traefik.yml`` and
``certs/dynamic.yml`` as derived by ``tests/traefik_harness.py`` (the router's domain set to
the scenario's ``localhost``). After the deploys, ``deploy --all`` and ``gateway restart``,
one more operation runs under the load: ``gateway edge upgrade`` replaces Traefik itself by a
new process on the same ports (the same binary: the only version installed here).

Everything else is ``scenario.scenario`` itself, given this edge (``scenario.Edge``): its
client sends each ``http://127.0.0.1:<gateway port>`` request to Traefik's HTTPS port instead
(``scenario.Https``), with the request's Host as the TLS server name, the chain verified
against the dev CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.tls import make_dev_certs
from tests import traefik_harness as harness
from tests.load import scenario as base


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


class ThroughTraefik(base.Edge):
    """The production Traefik in front (TLS there), and ``gateway edge upgrade`` under load."""

    def __init__(self) -> None:
        self.work = Path()
        self.port = 0
        self.traefik: harness.Traefik | None = None
        self.traefik_pid = 0
        self.tls = ssl.create_default_context()  # the dev CA's, once start() made it

    def prepare(self, work: Path, port: int) -> dict[str, str]:
        self.work, self.port = work, port
        return {}

    async def start(self) -> None:
        certs = make_dev_certs("localhost", self.work / "certs")
        self.traefik = await asyncio.to_thread(
            harness.start_for_gateway, self.port, certs, self.work / "traefik", None, "localhost"
        )
        self.traefik_pid = self.traefik.proc.pid
        self.tls = ssl.create_default_context(cafile=str(certs.ca))
        # The chain is verified, the host name not: OpenSSL refuses a wildcard right under a
        # single label (*.localhost). tests/test_traefik_https.py checks names on example.org.
        self.tls.check_hostname = False
        base.say(f"Traefik on {self.traefik.ports.websecure}")

    def to_load(self) -> httpx.AsyncBaseTransport | None:
        assert self.traefik is not None
        return base.Https(self.traefik.ports.websecure, self.tls)

    async def operate(self, run: base.Run) -> None:
        assert self.traefik is not None
        self.traefik_pid = await upgrade_traefik(self.traefik, self.work, run)

    def stop(self) -> None:
        if self.traefik is not None:
            self.traefik.stop()
        if self.traefik_pid:
            _stop_pid(self.traefik_pid)
