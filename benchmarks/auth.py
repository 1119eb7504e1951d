"""Auth benchmark: what the per-request session check costs, side by side in one run.

    .venv/bin/python benchmarks/auth.py [--duration 5] [--rounds 3]

One real gateway process (benchmarks/serve_gateway.py, production uvicorn settings) in front
of a tiny nginx upstream, one team that is public *and* has a member, four kinds of client:
    public   anonymous GET on the public team: the header scan and a public-flag lookup
    baseline the same, but the same bytes on the wire as "session": a cookie of the same size
             (not a session) and a padding header the size of the signed actor header, which
             the gateway forwards. Forwarding ~170 more bytes upstream costs throughput by
             itself (measured ~20% on this tiny upstream), so THIS is the fair baseline.
    session  a signed-in member's cookie: cookie parse, one dict lookup, the signed actor header
    token    an API token (Authorization: Bearer)
Modes alternate round by round so drift on the shared machine hits each alike; the table shows
the median req/s and gateway CPU per request, and the session mode's cost against public.
A second, in-process figure times ``Auth.authorize`` alone (microseconds per call) and puts it
against the gateway's whole CPU cost per request from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    TEAM,
    TEAM_HOST,
    Processes,
    WrkResult,
    cpu_seconds,
    find_tool,
    free_port,
    group_pids,
    nginx_upstream_conf,
    parse_wrk,
    require_tools,
    start_nginx,
    wait_http,
)
from itsdangerous import URLSafeTimedSerializer

from gateway.auth import accounts, keys
from gateway.auth.sessions import Sessions
from gateway.auth.tokens import Tokens
from gateway.context import RequestContext
from gateway.store import open_store

HERE = Path(__file__).resolve().parent


def wrk(port: int, headers: list[str], duration: float, pids: list[int]) -> WrkResult:
    args = [find_tool("wrk") or "wrk", "-t2", "-c50", f"-d{max(1, round(duration))}s"]
    args += ["--timeout", "10s", "--latency", "-H", f"Host: {TEAM_HOST}"]
    for header in headers:
        args += ["-H", header]
    args.append(f"http://127.0.0.1:{port}/")
    before = cpu_seconds(pids)
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if result.requests:
        result.cpu_us = (cpu_seconds(pids) - before) / result.requests * 1e6
    return result


def prepare(data_dir: Path) -> tuple[str, str]:
    """The team, a member, a session cookie and an API token, written before the gateway starts."""
    store = open_store(data_dir / "control.db")
    store.create_team(TEAM)
    user = accounts.create_user(store, "bench@example.org", "unused-hash")
    accounts.add_member(store, TEAM, user.id, "owner")
    accounts.set_public(store, TEAM, True)
    signer = keys.serializers(keys.load_keys(store))["session"]
    cookie, _ = Sessions(store, signer).create(user.id, remember=True)
    token = Tokens(store).create(TEAM, user.id, "bench")
    store.close()
    return cookie, token


def micro(data_dir: Path, cookie: str, n: int = 50_000) -> dict[str, float]:
    """CPU microseconds per ``Auth.authorize`` call, in process, against the same store
    (CPU time, not wall time: the machine is shared, and wrk's figure is CPU time too)."""
    from gateway.app import create_app
    from gateway.config import Config
    from gateway.routing.service import Service
    from gateway.runtimes.static import StaticRuntime

    async def run() -> dict[str, float]:
        app = create_app(
            Config(data_dir=data_dir, domain="localhost"),
            runtime=StaticRuntime({TEAM: ("127.0.0.1", 9)}),
        )
        service = Service(TEAM, hosts=[TEAM_HOST])
        base = [(b"host", TEAM_HOST.encode()), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
        variants = {
            "public": base,
            "session": [*base, (b"cookie", f"gateway_session={cookie}".encode())],
        }
        out = {}
        for name, headers in variants.items():
            scope: dict[str, Any] = {"method": "GET", "path": "/", "headers": headers}
            for _ in range(1000):  # warm the caches
                app.auth.authorize(dict(scope), RequestContext(), service)
            start = time.process_time()
            for _ in range(n):
                app.auth.authorize(dict(scope), RequestContext(), service)
            out[name] = (time.process_time() - start) / n * 1e6
        app.store.close()
        return out

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    require_tools()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-auth-bench-"))
    data_dir = tmp / "data"
    cookie, token = prepare(data_dir)
    # As long as the x-gateway-actor value the gateway adds for the session user.
    pad = URLSafeTimedSerializer("k", salt="gateway-actor").dumps(
        {"id": "u_0123456789abcdef", "email": "bench@example.org"}
    )
    pad = "p" * (len(pad) + len("x-gateway-actor") - len("x-padding"))
    modes = {
        "public": [],
        "baseline": [f"Cookie: unrelated_cookie={cookie}; other=1", f"X-Padding: {pad}"],
        "session": [f"Cookie: gateway_session={cookie}; other=1"],
        "token": [f"Authorization: Bearer {token}"],
    }
    results: dict[str, list[WrkResult]] = {m: [] for m in modes}
    with Processes(tmp) as procs:
        up_port, gw_port = free_port(), free_port()
        start_nginx(procs, tmp, "upstream", nginx_upstream_conf(tmp, up_port, 1))
        wait_http(up_port)
        gw = procs.start(
            "gateway",
            [
                sys.executable,
                str(HERE / "serve_gateway.py"),
                "--data-dir",
                str(data_dir),
                "--port",
                str(gw_port),
                "--team",
                TEAM,
                "--static",
                f"127.0.0.1:{up_port}",
            ],
        )
        wait_http(gw_port, host=TEAM_HOST, proc=gw)
        pids = group_pids(gw.pid)
        for mode in modes:  # warm-up, not counted
            wrk(gw_port, modes[mode], 1, pids)
        names = list(modes)
        for r in range(args.rounds):
            for mode in names[r % len(names) :] + names[: r % len(names)]:
                res = wrk(gw_port, modes[mode], args.duration, pids)
                if res.bad:
                    raise SystemExit(f"{mode}: {res.bad} bad answers; figures meaningless")
                results[mode].append(res)
    per_call = micro(data_dir, cookie)
    print(f"\n{'mode':<8} {'req/s':>9} {'vs baseline':>12} {'CPU us/req':>11} {'p50 ms':>7}")
    base_rps = statistics.median(r.rps for r in results["baseline"])
    for mode, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        cpu = statistics.median(r.cpu_us or 0 for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        print(f"{mode:<8} {rps:>9.0f} {rps / base_rps:>12.3f} {cpu:>11.1f} {p50:>7.2f}")
    cpu_session = statistics.median(r.cpu_us or 0 for r in results["session"])
    cpu_base = statistics.median(r.cpu_us or 0 for r in results["baseline"])
    rps_session = statistics.median(r.rps for r in results["session"])
    print(
        f"\nsession vs baseline: throughput {rps_session / base_rps:.3f}x, "
        f"CPU per request {(cpu_session - cpu_base) / cpu_base * 100:+.1f}%"
    )
    print(
        f"\nAuth.authorize in process: public {per_call['public']:.2f} us, "
        f"session {per_call['session']:.2f} us per call"
    )
    print(
        f"session check = {per_call['session'] / cpu_session * 100:.1f}% of the gateway's "
        f"CPU per proxied request ({cpu_session:.0f} us); target <= 5%"
    )


if __name__ == "__main__":
    main()
