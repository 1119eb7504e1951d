"""Wake latency of a sleeping team against a cold ``teams create``, in one run (issue 17).

    .venv/bin/python benchmarks/sleep.py [--runtime local|docker] [--wakes 10] [--creates 3]

One real gateway (in this process, a real socket, the production protocol) with public teams.
"cold create": from the team's row written to the store (as `gateway teams create` does) to
its first 200 through the gateway. "wake": the team put to sleep (instance stopped), then the
time of one request that wakes it, held until the instance is healthy, to its 200. Prints
p50/p95 of both. (The density figure of issue 17 is not measured here yet.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import create_app
from gateway.config import Config
from gateway.http.protocol import GatewayHttpProtocol
from tests.conftest import LoopbackTransport, free_socket


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def first_200(client: httpx.AsyncClient, url: str, bound: float = 120) -> float:
    """Seconds until ``url`` answers 200 (404 until the team is routed; held after that)."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        r = await client.get(url)
        if r.status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.01)  # not routed yet: the fleet notices the store within 50 ms
    raise SystemExit(f"{url} never answered 200 within {bound}s")


async def main(runtime: str, wakes: int, creates: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sleep-bench-") as tmp:
        sock = free_socket()
        port = sock.getsockname()[1]
        config = Config(
            data_dir=Path(tmp),
            domain="localhost",
            port=port,
            runtime=runtime,
            hold_timeout=60,
            watch_interval=0.05,
            idle_timeout=0,
        )
        app = create_app(config)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                loop="none",
                http=GatewayHttpProtocol,
                proxy_headers=False,
            )
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
        cold: list[float] = []
        wake: list[float] = []
        try:
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=90) as client:
                for n in range(creates):
                    slug = f"cold{n}"
                    app.store.create_team(slug)
                    app.store.query("UPDATE teams SET public = 1 WHERE slug = ?", [slug])
                    app.auth.changed()  # public at once: the benchmark is not about auth
                    cold.append(
                        await first_200(client, f"http://{slug}.localhost:{port}/data.json")
                    )
                url = f"http://cold0.localhost:{port}/data.json"
                for _ in range(wakes):
                    asleep = app.fleet.sleep("cold0")
                    assert asleep is not None
                    await asleep
                    started = time.monotonic()
                    r = await client.get(url)
                    assert r.status_code == 200, r.text
                    wake.append(time.monotonic() - started)
        finally:
            server.should_exit = True
            await task
            if runtime == "docker":  # containers outlive a gateway: remove this run's
                from gateway.runtimes.docker.runtime import deprovision_team
                from gateway.store import open_store

                store = open_store(config.control_db)  # the gateway closed its own
                for n in range(creates):
                    deprovision_team(config, store, f"cold{n}")
                store.close()
    print(f"runtime {runtime}: {creates} cold create(s), {wakes} wake(s)")
    print(f"  cold create -> first 200: p50 {pct(cold, 50):.2f}s  p95 {pct(cold, 95):.2f}s")
    print(
        f"  wake -> 200:              p50 {pct(wake, 50):.2f}s  p95 {pct(wake, 95):.2f}s"
        f"  (mean {statistics.mean(wake):.2f}s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--wakes", type=int, default=10)
    parser.add_argument("--creates", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runtime, max(1, args.wakes), max(1, args.creates)))
