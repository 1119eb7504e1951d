"""Time from ``gateway teams create`` to the first 200 through the gateway (docker runtime).

    .venv/bin/python benchmarks/docker_provision.py [--rounds 5]

A real ``gateway serve --runtime docker`` runs on a free port; each round runs the real CLI
(``teams create SLUG --no-wait``), marks the team public (the poll is anonymous), then polls
``/data.json`` through the gateway until it answers 200. The baseline, side by side, is a
plain ``docker run`` of the same image polled directly on its published port: what the
container itself costs, without the gateway. Target: under 3 s. Everything made is removed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker

from gateway.runtimes import image
from gateway.runtimes.base import prepare_team_dir

BIN = Path(sys.executable).parent
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(url: str, host: str | None = None) -> bool:
    """GET until 200, bounded by DEADLINE."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        req = urllib.request.Request(url, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    return False


def gateway_rounds(rounds: int, data_dir: Path) -> tuple[list[float], list[float]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_RUNTIME": "docker",
        "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_PORT": "0",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    log = open(data_dir.parent / "gateway.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen([BIN / "gateway", "serve"], env=env, stdout=log, stderr=log)
    times: list[float] = []
    cli_times: list[float] = []
    try:
        if not poll(f"http://127.0.0.1:{port}/", "localhost"):
            raise SystemExit("the gateway did not start; see gateway.log")
        for n in range(rounds):
            slug = f"bench{n}"
            started = time.perf_counter()
            subprocess.run(
                [BIN / "gateway", "teams", "create", slug, "--no-wait"],
                env=env,
                check=True,
                capture_output=True,
            )
            cli_times.append(time.perf_counter() - started)
            with sqlite3.connect(data_dir / "control.db") as conn:  # anonymous reads
                conn.execute("UPDATE teams SET public = 1 WHERE slug = ?", [slug])
            if not poll(f"http://127.0.0.1:{port}/data.json", f"{slug}.localhost"):
                raise SystemExit(f"{slug} never answered 200 through the gateway")
            times.append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    return times, cli_times


def baseline_rounds(rounds: int, client: docker.DockerClient, tag: str, work: Path) -> list[float]:
    times: list[float] = []
    for n in range(rounds):
        data = work / f"plain{n}"
        prepare_team_dir(data)  # the same data.db a team starts with
        for path in (data, *data.iterdir()):
            os.chown(path, image.UID, image.UID)
        started = time.perf_counter()
        container = client.containers.run(
            tag,
            detach=True,
            volumes={str(data): {"bind": "/data", "mode": "rw"}},
            ports={f"{image.PORT}/tcp": ("127.0.0.1", None)},
            labels={"gateway.bench": "baseline"},
        )
        try:
            container.reload()
            port = container.ports[f"{image.PORT}/tcp"][0]["HostPort"]
            if not poll(f"http://127.0.0.1:{port}/data.json"):
                raise SystemExit("the plain container never answered 200")
            times.append(time.perf_counter() - started)
        finally:
            container.remove(force=True)
    return times


def summary(name: str, times: list[float]) -> str:
    return (
        f"{name:<34} median {statistics.median(times):5.2f}s  "
        f"min {min(times):5.2f}s  max {max(times):5.2f}s  (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tag, _ = image.build(progress=print)
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        work = Path(tmp)
        try:
            base = baseline_rounds(args.rounds, client, tag, work)
            gw, cli = gateway_rounds(args.rounds, work / "data")
        finally:
            for c in client.containers.list(all=True, filters={"label": "gateway.bench"}):
                c.remove(force=True)
            gid = _gateway_id(work / "data" / "control.db")
            if gid:
                label = f"gateway.managed-by={gid}"
                for c in client.containers.list(all=True, filters={"label": label}):
                    c.remove(force=True, v=True)
    print(summary("docker run -> first 200 (baseline)", base))
    print(summary("teams create -> first 200 via gw", gw))
    print(summary("  of which the CLI process itself", cli))
    ratio = statistics.median(gw) / statistics.median(base)
    verdict = "under" if statistics.median(gw) < 3 else "OVER"
    print(f"gateway / baseline = {ratio:.2f}x; median {verdict} the 3 s target")


def _gateway_id(db: Path) -> str | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM settings WHERE key = 'gateway_id'").fetchone()
    return row[0] if row else None


if __name__ == "__main__":
    main()
