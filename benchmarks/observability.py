"""What observability costs the hot path, measured side by side (ratios, not thresholds).

    python benchmarks/observability.py            # in-process: ns per request, 3 ways
    python benchmarks/observability.py --e2e      # + wrk through real gateways (wrk, nginx)

In-process: one request's bookkeeping as the gateway does it (``RequestStats.record``) against
prometheus-client's ``labels().inc()`` + ``labels().observe()``, and the JSON access-log line.
End to end: a tiny nginx upstream behind two gateways, access log off vs on (to a file),
alternating rounds; requests/s and server CPU per request.
"""

from __future__ import annotations

import argparse
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

        base = per_op(empty)
        rows = [("RequestStats.record", per_op(ours) - base)]
        rows.append(("prometheus labels().inc()+observe()", per_op(prom) - base))
        rows.append(("access log line (escaped JSON + buffered write)", per_op(access) - base))
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
        for name, log in (("log-off", ""), ("log-on", str(tmp / "access.log"))):
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
    for conns in (1, 32):
        off = results["log-off"][conns]
        on = results["log-on"][conns]
        rps_off = statistics.median(r.rps for r in off)
        rps_on = statistics.median(r.rps for r in on)
        cpu_off = statistics.median(r.cpu_us for r in off)
        cpu_on = statistics.median(r.cpu_us for r in on)
        print(
            f"  {conns:>2} conn(s): access log off {rps_off:8.0f} req/s {cpu_off:6.1f} us CPU/req"
            f" | on {rps_on:8.0f} req/s {cpu_on:6.1f} us CPU/req"
            f" | on/off req/s {rps_on / rps_off:.3f}, CPU {cpu_on / cpu_off:.3f}"
        )
    print(f"  ({lines} access-log lines written)")


def serve(port: int, data_dir: str, upstream: int, access_log: str) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import Config
    from gateway.runtimes.static import StaticRuntime
    from gateway.server import uvicorn_config

    config = Config(data_dir=Path(data_dir), port=port, log_level="warning", access_log=access_log)
    app = create_app(config, runtime=StaticRuntime({"bench": ("127.0.0.1", upstream)}))
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
