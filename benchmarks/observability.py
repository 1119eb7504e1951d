"""What observability costs the hot path, measured side by side (ratios, not thresholds).

    python benchmarks/observability.py            # in-process: ns per request, 3 ways
    python benchmarks/observability.py --e2e      # + wrk through real gateways (wrk, nginx)

In-process: one request's bookkeeping as the gateway does it (``RequestStats.record``) against
prometheus-client's ``labels().inc()`` + ``labels().observe()``, and the JSON access-log line.
End to end: a tiny nginx upstream behind three gateways: no observer at all, metrics only
(the default), metrics + access log to a file; alternating rounds; req/s and CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gateway.observability.accesslog import open_access_log  # noqa: E402
from gateway.observability.observe import Observer  # noqa: E402
from gateway.observability.stats import BUCKETS, RequestStats  # noqa: E402

N = 200_000
TEAMS = [f"team{i}" for i in range(20)]
SCOPE: dict[str, Any] = {
    "method": "GET",
    "path": "/data/items.json",
    "client": ("127.0.0.1", 50000),
    "request_id": b"0123456789abcdef0123456789abcdef",
    "target": "team1-abcdef12",
    "retries": 0,
}


def per_op(fn: Any) -> float:
    """Median ns per call over 3 runs of N calls."""
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) / N * 1e9)
    return statistics.median(runs)


def micro() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    stats = RequestStats()
    registry = CollectorRegistry()
    requests = Counter("r", "r", ["team", "status"], registry=registry)
    latency = Histogram("l", "l", ["team"], buckets=BUCKETS, registry=registry)

    def empty() -> None:
        for i in range(N):
            TEAMS[i % 20]

    def ours() -> None:
        for i in range(N):
            stats.record(TEAMS[i % 20], 200, 0.012, 1000.0 + i * 1e-4)

    def prom() -> None:
        for i in range(N):
            team = TEAMS[i % 20]
            requests.labels(team, "200").inc()
            latency.labels(team).observe(0.012)

    with tempfile.TemporaryDirectory() as tmp:
        log = open_access_log(str(Path(tmp) / "access.log"))
        assert log is not None

        def access() -> None:
            for i in range(N):
                log.write(SCOPE, TEAMS[i % 20], 200, 0.012, 1000.0 + i * 1e-4)

        async def handler(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b""})

        async def sink(message: Any) -> None:
            pass

        observer = Observer(handler, RequestStats())

        def direct() -> None:
            async def go() -> None:
                for _ in range(N):
                    await handler({}, None, sink)

            asyncio.run(go())

        def observed() -> None:
            async def go() -> None:
                for _ in range(N):
                    await observer({}, None, sink)

            asyncio.run(go())

        base = per_op(empty)
        wrapped = per_op(observed) - per_op(direct)
        rows = [("RequestStats.record", per_op(ours) - base)]
        rows.append(("prometheus labels().inc()+observe()", per_op(prom) - base))
        rows.append(("access log line (escaped JSON + buffered write)", per_op(access) - base))
        rows.append(("Observer: send wrapper + clocks + record", wrapped))
        log.close()
    print(f"In-process cost per request ({N} requests, median of 3, loop overhead removed)")
    ours_ns = rows[0][1]
    for name, ns in rows:
        print(f"  {name:<48} {ns:8.0f} ns   {ns / ours_ns:5.2f}x RequestStats")


def e2e(duration: float, rounds: int) -> None:
    from common import (  # type: ignore[import-not-found]
        Processes,
        free_port,
        group_pids,
        nginx_upstream_conf,
        require_tools,
        run_wrk,
        start_nginx,
        wait_http,
    )

    require_tools()
    with tempfile.TemporaryDirectory() as tmp_name, Processes(Path(tmp_name)) as procs:
        tmp = Path(tmp_name)
        up = free_port()
        upstream = start_nginx(procs, tmp, "upstream", nginx_upstream_conf(tmp, up, 1))
        wait_http(up, proc=upstream)
        ports = {}
        variants = (("bare", "bare"), ("log-off", ""), ("log-on", str(tmp / "access.log")))
        for name, log in variants:
            port = free_port()
            args = [sys.executable, __file__, "--serve", str(port), str(tmp / name), str(up), log]
            proc = procs.start(name, args)
            wait_http(port, host="bench.localhost", proc=proc)
            ports[name] = (port, group_pids(proc.pid))
        results: dict[str, dict[int, list[Any]]] = {n: {1: [], 32: []} for n in ports}
        for _ in range(rounds):
            for name, (port, pids) in ports.items():
                for conns in (1, 32):
                    r = run_wrk(
                        port, "/", connections=conns, duration=duration,
                        host="bench.localhost", cpu_pids=pids,
                    )  # fmt: skip
                    results[name][conns].append(r)
        lines = (tmp / "access.log").read_text().count("\n")
    print(f"\nEnd to end: tiny nginx upstream, {duration:g} s per run, median of {rounds}")
    print("  bare = no metrics, no access log; log-off = metrics only (the default)")
    for conns in (1, 32):
        med = {
            name: (
                statistics.median(r.rps for r in results[name][conns]),
                statistics.median(r.cpu_us for r in results[name][conns]),
            )
            for name in results
        }
        base_rps, base_cpu = med["bare"]
        for name, (rps, cpu) in med.items():
            print(
                f"  {conns:>2} conn(s) {name:<8} {rps:8.0f} req/s ({rps / base_rps:5.3f}x bare)"
                f"  {cpu:6.1f} us CPU/req ({cpu / base_cpu:5.3f}x bare)"
            )
    print(f"  ({lines} access-log lines written)")


def serve(port: int, data_dir: str, upstream: int, access_log: str) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import Config
    from gateway.runtimes.static import StaticRuntime
    from gateway.server import uvicorn_config

    bare = access_log == "bare"  # no observer at all: the baseline for its own cost
    log = "" if bare else access_log
    config = Config(data_dir=Path(data_dir), port=port, log_level="warning", access_log=log)
    app = create_app(config, runtime=StaticRuntime({"bench": ("127.0.0.1", upstream)}))
    if bare:
        app.observed = app.handle  # type: ignore[assignment]
    if not app.store.teams():
        app.store.create_team("bench")
    with app.store.transaction() as conn:  # wrk is anonymous: a public team serves it
        conn.execute("UPDATE teams SET public = 1 WHERE slug = 'bench'")
    uvicorn.Server(uvicorn_config(app, config)).run()


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--e2e", action="store_true")
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    micro()
    if args.e2e:
        e2e(args.duration, args.rounds)


if __name__ == "__main__":
    main()
