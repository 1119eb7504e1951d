"""Replace the running Traefik by another binary on the same ports, with no failed request.

1. check: every entrypoint has ``reusePort`` and a ``requestAcceptGraceTimeout``, and each
   port has exactly one listener, the running Traefik's;
2. steer each port's connections to that listener (``steer``: index 0), so the new process
   can join the port without receiving anything;
3. start the new Traefik on the same static file plus a loopback API entrypoint;
4. wait until its API lists a router on every entrypoint, all enabled: "routers built"
   (its ``/ping`` answers earlier, and a connection it took then would get a 404);
5. steer each port to the new listener (index 1) and SIGTERM the old process: it accepts
   what was already queued for it during ``requestAcceptGraceTimeout``, closes its listeners,
   and finishes its in-flight requests within ``graceTimeOut``;
6. once the old listeners are gone, detach the program: the kernel's own hash again.

A failure before step 5 stops the new process and leaves the old one serving as before.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.edge import steer, traefik_config
from gateway.errors import GatewayError


class UpgradeError(GatewayError):
    """The handover did not happen; the message says where it stopped."""


class Step(enum.Enum):
    CHECKED = "checked"
    HELD = "held on the old Traefik"
    STARTED = "new Traefik started"
    READY = "new Traefik's routers built"
    SWITCHED = "new connections go to the new Traefik"
    OLD_CLOSED = "old Traefik's listeners closed"
    DONE = "done"


@dataclass
class Plan:
    binary: Path
    config: Path
    old_pid: int
    work_dir: Path
    ready_timeout: float = 60.0


@dataclass
class Result:
    process: subprocess.Popen[bytes]  # the new Traefik; it outlives the command
    api_url: str
    log: Path
    steps: list[tuple[Step, float]] = field(default_factory=list)

    @property
    def new_pid(self) -> int:
        return self.process.pid


def reserve_port() -> socket.socket:
    """A free loopback port, held for a Traefik entrypoint that has ``reusePort``: bound with
    SO_REUSEPORT but never listening, so Traefik (same user, same option) can bind it too and
    no other program can take it in between. It refuses connections; close it once Traefik
    listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def routers_built(api_url: str, entrypoints: set[str]) -> bool:
    """Every router enabled, and at least one on each served entrypoint."""
    try:
        r = httpx.get(f"{api_url}/api/http/routers", timeout=2)
        routers = r.json() if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return False
    covered = {ep for rt in routers for ep in rt.get("entryPoints", [])}
    enabled = all(rt.get("status") == "enabled" for rt in routers)
    return bool(routers) and enabled and entrypoints <= covered


def _old_listeners(plan: Plan, ports: dict[str, int]) -> dict[str, steer.Listener]:
    out = {}
    for name, port in ports.items():
        mine = steer.listeners_of(plan.old_pid, port)
        everyone = steer.listening_inodes(port)
        if len(mine) != 1 or everyone != {mine[0].inode}:
            raise UpgradeError(
                f"port {port} ({name}) has {len(everyone)} listener(s), {len(mine)} of them "
                f"in pid {plan.old_pid}: expected the running Traefik alone (is another "
                "upgrade under way, or is that the wrong pid?)"
            )
        out[name] = mine[0]
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def upgrade(plan: Plan, progress: Callable[[str], None] = lambda _: None) -> Result:
    t0 = time.monotonic()
    static = traefik_config.load_static(plan.config)
    traefik_config.check_upgradable(static)
    ports = traefik_config.served_entrypoints(static)
    old = _old_listeners(plan, ports)
    steps: list[tuple[Step, float]] = []

    def mark(step: Step) -> None:
        steps.append((step, round(time.monotonic() - t0, 3)))
        progress(f"{step.value} ({time.monotonic() - t0:.1f}s)")

    mark(Step.CHECKED)
    for listener in old.values():
        steer.steer(listener, 0)
    mark(Step.HELD)

    plan.work_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    held = reserve_port()
    api_port = int(held.getsockname()[1])
    derived = plan.work_dir / f"traefik-{stamp}.yml"
    traefik_config.write(traefik_config.with_api(static, api_port), derived)
    log = plan.work_dir / f"traefik-{stamp}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(plan.binary), f"--configFile={derived}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=plan.config.parent,
            start_new_session=True,  # it outlives this command
        )
    mark(Step.STARTED)
    api_url = f"http://127.0.0.1:{api_port}"
    try:
        new = _wait_ready(plan, proc, api_url, ports, log)
    except BaseException:
        _stop(proc)
        for listener in old.values():
            with contextlib.suppress(steer.SteerError):  # the old process is gone: no group
                steer.release(listener)
        raise
    finally:
        held.close()
    mark(Step.READY)

    for listener in old.values():
        steer.steer(listener, 1)
    mark(Step.SWITCHED)
    with contextlib.suppress(ProcessLookupError):
        os.kill(plan.old_pid, signal.SIGTERM)
    _wait_closed(old, traefik_config.accept_grace(static))
    for listener in new.values():
        steer.release(listener)
    mark(Step.OLD_CLOSED)
    mark(Step.DONE)
    return Result(proc, api_url, log, steps)


def _wait_ready(
    plan: Plan,
    proc: subprocess.Popen[bytes],
    api_url: str,
    ports: dict[str, int],
    log: Path,
) -> dict[str, steer.Listener]:
    deadline = time.monotonic() + plan.ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise UpgradeError(
                f"the new Traefik exited ({proc.returncode}) before it could route: "
                + " | ".join(tail)
            )
        if routers_built(api_url, set(ports)):
            break
        time.sleep(0.1)
    else:
        raise UpgradeError(
            f"the new Traefik built no router on every entrypoint in {plan.ready_timeout:.0f}s "
            f"(its log: {log})"
        )
    new = {}
    for name, port in ports.items():
        mine = steer.listeners_of(proc.pid, port)
        if len(mine) != 1:
            raise UpgradeError(f"the new Traefik does not listen on port {port} ({name})")
        new[name] = mine[0]
    return new


def _wait_closed(old: dict[str, steer.Listener], accept_grace: float) -> None:
    """Until the old listeners left their groups (after its requestAcceptGraceTimeout)."""
    deadline = time.monotonic() + accept_grace + 10
    while time.monotonic() < deadline:
        if all(ln.inode not in steer.listening_inodes(ln.port) for ln in old.values()):
            return
        time.sleep(0.1)
    raise UpgradeError(
        "the old Traefik still listens: new connections all go to the new one, but check it"
    )
