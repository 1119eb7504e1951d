"""Helpers shared by the benchmarks: processes in their own groups, ports, nginx, wrk, CPU time.

Everything listens on 127.0.0.1 only and runs from a temporary directory; every process is
started in its own session so that stopping it also stops whatever it started (nginx workers,
a gateway's Datasette children).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("nginx", "wrk")
# The one team every benchmark routes to, and the Host its requests carry.
TEAM = "bench"
TEAM_HOST = f"{TEAM}.localhost"
INSTALL_HINT = "apt-get install -y nginx wrk"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def require_tools() -> None:
    """The benchmark installs nothing itself; it says how when a tool is missing."""
    missing = [t for t in TOOLS if find_tool(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)}. Install with:\n  {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2)


def find_tool(name: str) -> str | None:
    # Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def free_port() -> int:
    """A probe, not a reservation: nginx, wrk's targets and most of the servers benchmarked take
    a port number, not a socket. Benchmarks run alone, by hand; a port taken in between fails
    the run loudly (the server does not start), never gives a wrong figure."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Start processes in their own process groups; stop every group on exit, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, args: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        """SIGTERM the whole group (the gateway drains and stops its Datasettes), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        # Children that outlived their parent still carry the group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_http(
    port: int,
    *,
    host: str = "127.0.0.1",
    path: str = "/",
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until GET ``path`` (with Host ``host``) answers 200 on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return
            last = f"status {resp.status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port}{path} (Host {host}) not ready in {timeout}s: {last}")


# -- CPU time -------------------------------------------------------------------------------
def group_pids(pgid: int) -> list[int]:
    """Every live process in a process group (nginx's master and workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of /proc/PID/stat: pgrp
            pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (not their children)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces: the fields after it start past its closing ')'.
    return raw[raw.rindex(")") + 2 :].split()


# -- wrk -------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    bad: int  # socket errors plus non-2xx/3xx answers: any makes the figures meaningless
    cpu_us: float | None = None  # CPU microseconds per request of the measured server
    upstream_cpu_us: float | None = None  # ... and of the server behind it, when asked


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out)
        if not m:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
        return m

    bad = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        bad += sum(int(g) for g in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        bad += int(m.group(1))
    return WrkResult(
        requests=int(find(r"(\d+) requests in")[1]),
        rps=float(find(r"Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=_ms(find(r"\n\s+50%\s+(\S+)")[1]),
        p99_ms=_ms(find(r"\n\s+99%\s+(\S+)")[1]),
        bad=bad,
    )


def run_wrk(
    port: int,
    path: str,
    *,
    connections: int,
    duration: float,
    host: str | None = None,
    cpu_pids: list[int] | None = None,
    upstream_pids: list[int] | None = None,
    scheme: str = "http",
    headers: tuple[str, ...] = (),
) -> WrkResult:
    """Load 127.0.0.1:``port`` for ``duration`` seconds; optionally count the server's CPU."""
    threads = min(connections, 2)
    args = [
        find_tool("wrk") or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    if host:
        args += ["-H", f"Host: {host}"]
    for header in headers:
        args += ["-H", header]
    args.append(f"{scheme}://127.0.0.1:{port}{path}")  # https: wrk verifies no certificate
    before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    up_before = cpu_seconds(upstream_pids) if upstream_pids else 0.0
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if cpu_pids and result.requests:
        result.cpu_us = (cpu_seconds(cpu_pids) - before) / result.requests * 1e6
    if upstream_pids and result.requests:
        result.upstream_cpu_us = (cpu_seconds(upstream_pids) - up_before) / result.requests * 1e6
    return result


# -- nginx -----------------------------------------------------------------------------------
def _nginx_common(tmp: Path, name: str, workers: int | str) -> str:
    return f"""
worker_processes {workers};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-client_body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    # Long-lived keep-alive for both proxies under test, so neither pays reconnects.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""


TINY_BODY = '{"ok": true, "service": "bench", "items": [1, 2, 3]}'


def nginx_upstream_conf(tmp: Path, port: int, workers: int | str) -> str:
    """nginx answering a fixed small JSON: the cheapest possible upstream."""
    return (
        _nginx_common(tmp, "upstream", workers)
        + f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            default_type application/json;
            return 200 '{TINY_BODY}';
        }}
    }}
}}
"""
    )


def nginx_proxy_conf(tmp: Path, port: int, upstream_port: int, workers: int | str) -> str:
    """nginx as the reference reverse proxy: keep-alive pool, the same headers the gateway sets."""
    return (
        _nginx_common(tmp, "proxy", workers)
        + f"""
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-ID $request_id;
        }}
    }}
}}
"""
    )


def nginx_args(tmp: Path, name: str, conf: str) -> list[str]:
    """The command line of a foreground nginx running ``conf`` (written to ``tmp``)."""
    path = tmp / f"{name}.conf"
    path.write_text(conf)
    nginx = find_tool("nginx") or "nginx"
    # -e: the error log named before the config is read (not /var/log); -p: the prefix.
    args = [nginx, "-p", str(tmp), "-e", str(tmp / f"{name}-error.log"), "-c", str(path)]
    return [*args, "-g", "daemon off;"]


def start_nginx(procs: Processes, tmp: Path, name: str, conf: str) -> subprocess.Popen[bytes]:
    return procs.start(name, nginx_args(tmp, name, conf))


def remove_gateway_containers(gateway_id: str) -> int:
    """Remove every container and Swarm service a benchmark's gateway left on the engine
    (containers outlive their gateway by design); returns how many were removed."""
    import docker

    client = docker.from_env()
    removed = 0
    try:
        label = f"gateway.managed-by={gateway_id}"
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
            removed += 1
        with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: none
            for service in client.api.services(filters={"label": label}):
                client.api.remove_service(service["ID"])
                removed += 1
    finally:
        client.close()
    return removed
