"""What the TLS edge costs: Traefik in front of the gateway against nginx, and the gateway's
own TLS with Traefik's certificate, in one run.

    .venv/bin/python benchmarks/edge.py [--duration 5] [--rounds 1] [--skip-datasette]

Two pages, each through every shape (rounds interleaved, the median run kept):

    tiny       a fixed small JSON from nginx (``return 200``, 1 worker), as in proxy.py
    datasette  a real Datasette table page (/data/items, 20 rows, HTML), one team Datasette

    gateway          wrk -> gateway (plain HTTP) -> page                         (reference)
    nginx-tls        wrk -TLS-> nginx (1 worker, keep-alive pool) -> page         (tiny only)
    nginx-tls-gw     wrk -TLS-> nginx -> gateway -> page
    traefik-old      wrk -TLS-> Traefik -> gateway, the access log of certs/traefik.yml before
                     issue 20 (every line to stdout, unbuffered)
    traefik-tls-gw   wrk -TLS-> Traefik -> gateway, certs/traefik.yml as shipped now
    traefik-nolog    the same with no access log at all
    gateway-tls      wrk -TLS-> gateway -> page, the certificate read from a Traefik acme.json
                     (``tls_acme_store``): Traefik keeps ACME, the gateway serves TLS

Traefik runs the production certs/traefik.yml + dynamic.yml as derived by
tests/traefik_harness.py (free ports, a ``gateway certs dev`` certificate, the gateway's port,
the router's domain set to ``localhost``). wrk keeps its connections (one TLS handshake each).
CPU us/req: the front process (Traefik or nginx), and ``gateway`` the gateway's own (for
gateway-tls the gateway is the front: TLS included).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from proxy import datasette_port, median, seed_team

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.edge import traefik_config  # noqa: E402
from gateway.tls import DevCerts, make_dev_certs  # noqa: E402
from tests import traefik_harness as harness  # noqa: E402

CONNECTIONS = 50
DS_TEAM = "ds"
DS_HOST = f"{DS_TEAM}.localhost"
DS_PATH = "/data/items"

Subject = tuple[str, int, str, list[int], list[int] | None]


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


def acme_json(certs: DevCerts, path: Path) -> Path:
    """The dev certificate in the layout Traefik's ACME store writes (base64 PEM per entry)."""
    entry = {
        "domain": {"main": "localhost", "sans": ["*.localhost"]},
        "certificate": base64.b64encode(certs.cert.read_bytes()).decode(),
        "key": base64.b64encode(certs.key.read_bytes()).decode(),
        "Store": "default",
    }
    data = {"letsencrypt": {"Account": {"Email": "ops@localhost"}, "Certificates": [entry]}}
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)
    return path


def old_access_log(static: dict[str, Any], work: Path) -> None:
    static["accessLog"] = {}  # what certs/traefik.yml had: every line to stdout, unbuffered


def no_access_log(static: dict[str, Any], work: Path) -> None:
    static.pop("accessLog", None)


def wait_tls(port: int, host: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """wait_http over TLS (any certificate: this only waits for the listener)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
            conn.request("GET", "/", headers={"Host": host})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"https://127.0.0.1:{port}/ (Host {host}) not ready in {timeout}s")


def start_traefik(
    gw_port: int,
    certs: DevCerts,
    work: Path,
    tune: Callable[[dict[str, Any], Path], None] | None = None,
) -> harness.Traefik:
    """harness.start_for_gateway, with an optional change to the static config."""
    static, dynamic, _ = harness.production()
    ports = harness.Ports.free()
    work.mkdir(parents=True, exist_ok=True)
    dynamic_path = work / "dynamic.yml"
    static, dynamic = harness.derive(
        static,
        dynamic,
        ports=ports,
        gateway_url=f"http://127.0.0.1:{gw_port}",
        certs=certs,
        dynamic_path=dynamic_path,
        domain="localhost",
    )
    if tune is not None:
        tune(static, work)
    traefik_config.write(dynamic, dynamic_path)
    return harness.start(static, ports, work)


def start_gateway(
    procs: Processes, name: str, data_dir: Path, port: int, statics: list[str], acme: str = ""
) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(HERE / "serve_gateway.py"), "--data-dir", str(data_dir)]
    args += ["--port", str(port), "--team", "bench"]
    for spec in statics:
        args += ["--static", spec]
    if acme:
        args += ["--tls-acme-store", acme]
    return procs.start(name, args)


def start_datasette(procs: Processes, tmp: Path) -> int:
    """A real team Datasette (proxy.py's small table), started and health-checked by a gateway
    of its own on the embedded local runtime; the measured gateways reach it as a fixed
    address, so both serve the same Datasette process."""
    data_dir = tmp / "ds"
    seed_team(data_dir)
    port = free_port()
    supervisor = start_gateway(procs, "gateway-ds", data_dir, port, [])
    wait_http(port, host=TEAM_HOST, path=DS_PATH, timeout=120, proc=supervisor)
    return datasette_port(port, data_dir)


def measure(
    subjects: list[Subject], path: str, host: str, args: argparse.Namespace
) -> dict[str, WrkResult]:
    for name, port, scheme, _, _ in subjects:  # warm up, and check each answers 200
        r = run_wrk(port, path, connections=CONNECTIONS, duration=1, host=host, scheme=scheme)
        if r.bad:
            raise SystemExit(f"{name}: {r.bad} errors or non-2xx answers in warm-up")
    results: dict[str, list[WrkResult]] = {s[0]: [] for s in subjects}
    for _ in range(args.rounds):
        for name, port, scheme, cpu, behind in subjects:
            results[name].append(
                run_wrk(
                    port,
                    path,
                    connections=CONNECTIONS,
                    duration=args.duration,
                    host=host,
                    cpu_pids=cpu,
                    upstream_pids=behind,
                    scheme=scheme,
                )
            )
    return {name: median(runs) for name, runs in results.items()}


def report(title: str, rows: dict[str, WrkResult], base_name: str) -> None:
    base = rows[base_name]
    print(title)
    if not base.rps:
        print(f"{'':16}no answers from {base_name}: {base}")
        return
    print(
        f"{'':16}{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs ' + base_name:>16} "
        f"{'front CPU us/req':>17} {'gateway CPU us/req':>19}"
    )
    for name, r in rows.items():
        front = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "-"
        behind = f"{r.upstream_cpu_us:.0f}" if r.upstream_cpu_us is not None else "-"
        if name in ("gateway", "gateway-tls"):
            front, behind = "-", front
        print(
            f"{name:16}{r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.rps / base.rps:>15.2f}x {front:>17} {behind:>19}"
        )
        if r.bad:
            print(f"{'':16}WARNING: {r.bad} errors or non-2xx answers: figures are suspect")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep the median run")
    parser.add_argument("--skip-datasette", action="store_true", help="only the tiny page")
    args = parser.parse_args()
    require_tools()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-edge-"))
    certs = make_dev_certs("localhost", tmp / "certs")
    acme = acme_json(certs, tmp / "acme.json")
    traefiks: list[harness.Traefik] = []
    ds_rows = None
    with Processes(tmp) as procs:
        up_port, gw_port, gw_tls_port, nginx_port, nginx_gw_port = (free_port() for _ in range(5))
        upstream = start_nginx(procs, tmp, "upstream", nginx_upstream_conf(tmp, up_port, 1))
        wait_http(up_port, proc=upstream)
        statics = [f"bench=127.0.0.1:{up_port}"]
        if not args.skip_datasette:
            statics.append(f"{DS_TEAM}=127.0.0.1:{start_datasette(procs, tmp)}")
        # Two gateways with the same teams: one plain (behind the fronts), one serving TLS.
        gateway = start_gateway(procs, "gateway", tmp / "gw", gw_port, statics)
        gateway_tls = start_gateway(
            procs, "gateway-tls", tmp / "gw-tls", gw_tls_port, statics, str(acme)
        )
        wait_http(gw_port, host=TEAM_HOST, proc=gateway)
        wait_tls(gw_tls_port, TEAM_HOST, gateway_tls)
        conf = nginx_tls_conf(tmp, nginx_port, up_port, certs.cert, certs.key)
        nginx = start_nginx(procs, tmp, "nginx-tls", conf)
        conf = nginx_tls_conf(tmp / "gwtls", nginx_gw_port, gw_port, certs.cert, certs.key)
        (tmp / "gwtls").mkdir()
        nginx_gw = start_nginx(procs, tmp / "gwtls", "nginx-tls-gw", conf)
        try:
            old = start_traefik(gw_port, certs, tmp / "traefik-old", old_access_log)
            traefiks.append(old)
            shipped = start_traefik(gw_port, certs, tmp / "traefik")
            traefiks.append(shipped)
            off = start_traefik(gw_port, certs, tmp / "traefik-nolog", no_access_log)
            traefiks.append(off)
            gw, gw_tls = [gateway.pid], [gateway_tls.pid]
            fronts: list[Subject] = [
                ("nginx-tls-gw", nginx_gw_port, "https", group_pids(nginx_gw.pid), gw),
                ("traefik-old", old.ports.websecure, "https", [old.proc.pid], gw),
                ("traefik-tls-gw", shipped.ports.websecure, "https", [shipped.proc.pid], gw),
                ("traefik-nolog", off.ports.websecure, "https", [off.proc.pid], gw),
                ("gateway-tls", gw_tls_port, "https", gw_tls, None),
            ]
            plain: Subject = ("gateway", gw_port, "http", gw, None)
            nginx_direct: Subject = ("nginx-tls", nginx_port, "https", group_pids(nginx.pid), None)
            rows = measure([plain, nginx_direct, *fronts], "/", TEAM_HOST, args)
            if not args.skip_datasette:
                ds_rows = measure([plain, *fronts], DS_PATH, DS_HOST, args)
        finally:
            for traefik in traefiks:
                traefik.stop()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"{CONNECTIONS} connections, keep-alive, {args.duration:g} s per run, median of "
        f"{args.rounds} interleaved rounds; load average {' '.join(load)} at the end\n"
    )
    report("tiny page (nginx return 200)", rows, "nginx-tls")
    if ds_rows is not None:
        report(f"Datasette table page {DS_PATH} (20 rows, HTML)", ds_rows, "nginx-tls-gw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
