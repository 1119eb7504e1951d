"""What the TLS edge costs: Traefik in front of the gateway against nginx, in one run.

    .venv/bin/python benchmarks/edge.py [--duration 5] [--rounds 1]

Upstream: nginx answering a fixed small JSON (``return 200``, 1 worker), as in proxy.py.

    gateway         wrk -> gateway (plain HTTP, StaticRuntime) -> upstream    (reference)
    nginx-tls       wrk -TLS-> nginx (1 worker, keep-alive pool) -> upstream
    nginx-tls-gw    wrk -TLS-> nginx -> gateway -> upstream
    traefik-tls-gw  wrk -TLS-> Traefik -> gateway -> upstream

Traefik runs the production certs/traefik.yml + dynamic.yml as derived by
tests/traefik_harness.py (free ports, a ``gateway certs dev`` certificate, the gateway's port,
the router's domain set to ``localhost``), access log on as in production. wrk keeps its
connections (one TLS handshake each). Rounds are interleaved; the median run is kept. CPU
us/req: the front process (Traefik or nginx), and ``behind`` the gateway's own.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from common import (
    TEAM_HOST,
    Processes,
    WrkResult,
    free_port,
    group_pids,
    nginx_upstream_conf,
    require_tools,
    run_wrk,
    start_nginx,
    wait_http,
)
from common import _nginx_common as nginx_common
from proxy import median, start_gateway

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.tls import make_dev_certs  # noqa: E402
from tests import traefik_harness as harness  # noqa: E402

CONNECTIONS = 50


def nginx_tls_conf(tmp: Path, port: int, upstream_port: int, cert: Path, key: Path) -> str:
    return (
        nginx_common(tmp, "tls", 1)
        + f"""
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep the median run")
    args = parser.parse_args()
    require_tools()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-edge-"))
    certs = make_dev_certs("localhost", tmp / "certs")
    with Processes(tmp) as procs:
        up_port, gw_port, nginx_port, nginx_gw_port = (free_port() for _ in range(4))
        upstream = start_nginx(procs, tmp, "upstream", nginx_upstream_conf(tmp, up_port, 1))
        wait_http(up_port, proc=upstream)
        gateway = start_gateway(
            procs, "gateway", tmp / "gw", gw_port, "uvicorn", f"127.0.0.1:{up_port}"
        )
        wait_http(gw_port, host=TEAM_HOST, proc=gateway)
        conf = nginx_tls_conf(tmp, nginx_port, up_port, certs.cert, certs.key)
        nginx = start_nginx(procs, tmp, "nginx-tls", conf)
        conf = nginx_tls_conf(tmp / "gwtls", nginx_gw_port, gw_port, certs.cert, certs.key)
        (tmp / "gwtls").mkdir()
        nginx_gw = start_nginx(procs, tmp / "gwtls", "nginx-tls-gw", conf)
        traefik = harness.start_for_gateway(gw_port, certs, tmp / "traefik", None, "localhost")
        gw_pids = [gateway.pid]
        subjects = [
            ("gateway", gw_port, "http", group_pids(gateway.pid), None),
            ("nginx-tls", nginx_port, "https", group_pids(nginx.pid), None),
            ("nginx-tls-gw", nginx_gw_port, "https", group_pids(nginx_gw.pid), gw_pids),
            ("traefik-tls-gw", traefik.ports.websecure, "https", [traefik.proc.pid], gw_pids),
        ]
        try:
            for name, port, scheme, _, _ in subjects:  # warm up, and check each answers 200
                r = run_wrk(
                    port, "/", connections=CONNECTIONS, duration=1, host=TEAM_HOST, scheme=scheme
                )
                if r.bad:
                    raise SystemExit(f"{name}: {r.bad} errors or non-2xx answers in warm-up")
            results: dict[str, list[WrkResult]] = {s[0]: [] for s in subjects}
            for _ in range(args.rounds):
                for name, port, scheme, cpu, behind in subjects:
                    results[name].append(
                        run_wrk(
                            port,
                            "/",
                            connections=CONNECTIONS,
                            duration=args.duration,
                            host=TEAM_HOST,
                            cpu_pids=cpu,
                            upstream_pids=behind,
                            scheme=scheme,
                        )
                    )
        finally:
            traefik.stop()
    rows = {name: median(runs) for name, runs in results.items()}
    base = rows["nginx-tls"]
    print(
        f"{CONNECTIONS} connections, keep-alive, {args.duration:g} s per run, "
        f"median of {args.rounds}; upstream: nginx return 200"
    )
    print(
        f"{'':16}{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx-tls':>13} "
        f"{'front CPU us/req':>17} {'gateway CPU us/req':>19}"
    )
    for name, r in rows.items():
        front = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "-"
        behind = f"{r.upstream_cpu_us:.0f}" if r.upstream_cpu_us is not None else "-"
        if name == "gateway":
            front, behind = "-", front
        print(
            f"{name:16}{r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.rps / base.rps:>12.2f}x {front:>17} {behind:>19}"
        )
        if r.bad:
            print(f"{'':16}WARNING: {r.bad} errors or non-2xx answers: figures are suspect")
    return 0


if __name__ == "__main__":
    sys.exit(main())
