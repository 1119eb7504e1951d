"""Instructions per proxied request, counted by callgrind: deterministic where req/s is not.

    python benchmarks/instructions.py [--seconds 6]
                                      [--subjects nginx,minimal,floor,gateway,gateway-traefik]
                                      [--keep DIR]

req/s on these shared 2-core machines moves by up to 2x with the neighbours' load; the number
of user-space instructions a server executes per request moves by about 1% (kernel work, the
syscalls, is not counted: compare syscall counts with strace). Each subject runs under
``valgrind --tool=callgrind`` in front of the same tiny upstream (nginx ``return 200``):

  nginx    the reference proxy, one process (``master_process off``)
  minimal  ``minimal_proxy.py``: the least any Python proxy costs (no features, no ASGI)
  floor    a trivial ASGI app under the gateway's server settings: the server's own cost
  gateway  the real gateway (``serve_gateway.py --static``), through routing, auth and proxy
  gateway-traefik  the same gateway trusting 127.0.0.1 as its proxy, each request carrying the
           headers Traefik 3.7 adds (captured from the real Traefik): the gateway's cost
           behind Traefik, without Traefik

For each: warm up, zero the counters, load it with wrk for a bounded time, dump, and divide
the instructions by the requests wrk completed; the same window with no load is subtracted
(timers, health checks). ``--keep DIR`` keeps each busy window's dump for
``callgrind_annotate``. Needs valgrind (``apt-get install -y valgrind``), nginx and wrk.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    TEAM,
    TEAM_HOST,
    Processes,
    free_port,
    nginx_args,
    nginx_proxy_conf,
    nginx_upstream_conf,
    require_tools,
    run_wrk,
    start_nginx,
    wait_http,
)

HERE = Path(__file__).resolve().parent
CONNECTIONS = 10
# What Traefik 3.7 sends the gateway besides Host (captured from certs/traefik.yml's Traefik).
TRAEFIK_HEADERS = (
    "X-Forwarded-For: 127.0.0.1",
    f"X-Forwarded-Host: {TEAM_HOST}",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Server: vm",
    "X-Real-Ip: 127.0.0.1",
    "Accept-Encoding: gzip",
)
KEEP: Path | None = None  # --keep: where the busy window's dumps are copied
PYTHON = sys.executable  # the venv's interpreter (a symlink, never a pyenv shim script)

FLOOR_APP = """
import sys, uvicorn
sys.path.insert(0, {root!r})
from gateway.config import Config
from gateway.server import uvicorn_config

BODY = b'{{"ok": true}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
    await send({{"type": "http.response.body", "body": BODY}})

config = Config(data_dir={data!r}, port={port}, log_level="warning")
uvicorn.Server(uvicorn_config(app, config)).run()
"""


def callgrind_total(out_file: Path) -> int:
    text = out_file.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not match:
        raise RuntimeError(f"no totals in {out_file}")
    return int(match.group(1))


def control(pid: int, flag: str) -> None:
    subprocess.run(
        ["callgrind_control", flag, str(pid)], capture_output=True, check=True, timeout=120
    )


def newest_dump(out_dir: Path, before: set[Path]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fresh = sorted(
            set(out_dir.glob("callgrind.out.*")) - before, key=lambda p: p.stat().st_mtime
        )
        if fresh:
            time.sleep(0.5)  # let the dump finish writing
            return fresh[-1]
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def measure(
    pid: int,
    port: int,
    host: str | None,
    seconds: float,
    out_dir: Path,
    headers: tuple[str, ...] = (),
) -> tuple[float, int]:
    """(instructions per request, requests) for the process ``pid`` under callgrind."""
    run_wrk(port, "/", connections=CONNECTIONS, duration=2, host=host, headers=headers)  # warm

    def window(load: bool) -> tuple[int, int]:
        before = set(out_dir.glob("callgrind.out.*"))
        control(pid, "-z")
        requests = 0
        if load:
            requests = run_wrk(
                port, "/", connections=CONNECTIONS, duration=seconds, host=host, headers=headers
            ).requests
        else:
            time.sleep(seconds)
        control(pid, "-d")
        dump = newest_dump(out_dir, before)
        if load and KEEP:
            KEEP.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, KEEP / f"{out_dir.name}.callgrind")
        return callgrind_total(dump), requests

    # Busy first: once vgdb has had to interrupt a process blocked in epoll (the idle window),
    # valgrind runs it far slower and the counts are off.
    busy, requests = window(load=True)
    idle, _ = window(load=False)
    if requests == 0:
        raise RuntimeError("wrk completed no request")
    return (busy - idle) / requests, requests


def valgrind(out_dir: Path, args: list[str]) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        "--dump-instr=no",
        "--trace-children=no",
        *args,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk run per window")
    parser.add_argument(
        "--subjects",
        default="nginx,minimal,floor,gateway",
        help="comma-separated: nginx,minimal,floor,gateway,gateway-traefik, or SCRIPT.py[:ARG...] "
        "for an "
        "experiment (an ARG of UP is replaced by the upstream's port)",
    )
    parser.add_argument(
        "--keep", type=Path, help="copy each busy window's callgrind dump here (callgrind_annotate)"
    )
    args = parser.parse_args()
    global KEEP
    KEEP = args.keep
    require_tools()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("missing: valgrind. Install with:\n  apt-get install -y valgrind", file=sys.stderr)
        raise SystemExit(2)
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    root = str(HERE.parent)
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="gw-instr-") as tmp_name:
        tmp = Path(tmp_name)
        procs = Processes(tmp)
        try:
            up_port = free_port()
            upstream = start_nginx(procs, tmp, "upstream", nginx_upstream_conf(tmp, up_port, 1))
            wait_http(up_port, proc=upstream)
            for subject in subjects:
                out_dir = tmp / f"cg-{len(rows)}"
                out_dir.mkdir()
                port = free_port()
                host: str | None = TEAM_HOST
                headers: tuple[str, ...] = ()
                if subject == "nginx":
                    # No master process: the one nginx process under callgrind does the work.
                    conf = nginx_proxy_conf(tmp, port, up_port, 1)
                    nginx = nginx_args(tmp, "proxy", conf)
                    nginx[-1] = "daemon off; master_process off;"
                    cmd = valgrind(out_dir, nginx)
                elif subject == "floor":
                    script = tmp / "floor.py"
                    script.write_text(
                        FLOOR_APP.format(root=root, data=str(tmp / "floor"), port=port)
                    )
                    cmd = valgrind(out_dir, [PYTHON, str(script)])
                    host = None
                elif subject == "minimal":
                    script = str(HERE / "minimal_proxy.py")
                    cmd = valgrind(out_dir, [PYTHON, script, str(port), str(up_port)])
                elif subject.split(":")[0].endswith(".py"):  # an experiment: SCRIPT[:ARG...]
                    script, *extra = subject.split(":")
                    cmd = valgrind(
                        out_dir,
                        [
                            PYTHON,
                            script,
                            str(port),
                            *[a.replace("UP", str(up_port)) for a in extra],
                        ],
                    )
                    host = None
                else:
                    gateway = [PYTHON, str(HERE / "serve_gateway.py"), "--port", str(port)]
                    gateway += ["--data-dir", str(tmp / subject), "--team", TEAM]
                    gateway += ["--static", f"127.0.0.1:{up_port}"]
                    if subject == "gateway-traefik":
                        gateway += ["--trusted-proxies", "127.0.0.1"]
                        headers = TRAEFIK_HEADERS
                    cmd = valgrind(out_dir, gateway)
                proc = procs.start(subject, cmd)
                wait_http(port, host=host or "127.0.0.1", proc=proc, timeout=300)
                per_request, requests = measure(
                    proc.pid, port, host, args.seconds, out_dir, headers
                )
                rows.append((subject, per_request, requests))
                print(
                    f"{subject:8} {per_request / 1000:8.1f}k instructions/request "
                    f"({requests} requests)",
                    flush=True,
                )
                procs.stop(proc)
        finally:
            procs.stop_all()
    base = {name: value for name, value, _ in rows}.get("nginx")
    print()
    print(f"{'subject':8} {'instr/req':>10} {'vs nginx':>9}")
    for name, value, _ in rows:
        ratio = f"{value / base:8.2f}x" if base else "       -"
        print(f"{name:8} {value / 1000:9.1f}k {ratio}")


if __name__ == "__main__":
    main()
