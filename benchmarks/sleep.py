"""Wake latency of a sleeping team against a cold ``teams create``, in one run (issue 17).

    .venv/bin/python benchmarks/sleep.py [--runtime local|docker] [--rounds 3] [--wakes 4]

One real gateway (in this process, a real socket, the production protocol) with public teams.
"cold create": from the team's row written to the store (as `gateway teams create` does) to
its first 200 through the gateway. "wake": the team put to sleep (instance stopped), then the
time of one request that wakes it, held until the instance is healthy, to its 200.

Each round makes one cold create, then wakes that team ``--wakes`` times, so creates and
wakes share the machine's load of the moment. Prints p50/p95 of both, the spread of the
per-round medians, and where a wake's time goes:

  start      request -> the runtime asked to start the instance (the gateway's own work)
  spawn      -> the process spawned (local) / the container created or started (docker)
  listen     -> the instance's port accepts connections (local: Python, Datasette's
                import and startup; docker publishes the port before the app listens)
  healthy    -> the first passing health check (the check's poll interval shows here)
  served     -> the held request answered 200

    .venv/bin/python benchmarks/sleep.py --against DIR [--runtime local|docker] [--rounds 4]

Before/after: DIR is a checkout of the baseline (``git archive main | tar -x -C DIR``). Each
round runs one single-round measurement on the baseline's code, then one on this tree's, each
in its own process (``SLEEP_BENCH_TREE`` picks the tree; both with ``GATEWAY_NATIVE=0``, as a
baseline copy has no compiled hot path), and prints both side by side with this tree's
p50/p95 as a ratio of the baseline's, and the spread of those ratios over the rounds. Other
``GATEWAY_*`` variables apply to both (``GATEWAY_LOCAL_START=exec``).

    .venv/bin/python benchmarks/sleep.py --density [--teams 500] [--active 20] [--seconds 60]

The density figure (local runtime): a gateway with ``max_awake`` = ``--active`` registers
``--teams`` public teams at once (teams beyond max_awake are routed asleep, so registering
starts at most that many Datasettes), then requests each of ``--active`` teams spread over the
names every 3 s for ``--seconds`` (their first requests wake them; the guard and idle_timeout
put the rest to sleep). Prints the RSS (and PSS) of the gateway plus every instance against
the target of 25 x one instance's RSS + the gateway's, and the gateway's own RSS per
registered team. The gateway runs in this process (its RSS includes the small client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import remove_gateway_containers

# The code measured: this tree, or the baseline's for --against's rounds.
sys.path.insert(0, os.environ.get("SLEEP_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from gateway.app import create_app
from gateway.config import from_env
from gateway.routing import health_checks as health_module
from tests.conftest import LoopbackTransport, free_socket, serve_app

PHASES = ("start", "spawn", "listen", "healthy", "served")
HERE = Path(__file__).resolve().parent.parent


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


class Timeline:
    """Marks of one wake, set by wrappers around the runtime and the health check."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.failed_checks = 0
        self.listen_task: asyncio.Task[None] | None = None

    def mark(self, phase: str) -> None:
        self.marks.setdefault(phase, time.monotonic())

    def durations(self, t0: float) -> dict[str, float]:
        """Each phase's own share: from the previous mark (or the request) to its own."""
        out, last = {}, t0
        for phase in PHASES:
            if phase in self.marks:
                out[phase] = self.marks[phase] - last
                last = self.marks[phase]
        return out


async def until_listening(port: int, timeline: Timeline, bound: float = 60) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                timeline.mark("listen")
                return
        except OSError:
            await asyncio.sleep(0.002)


def instrument(app: Any, runtime: str, current: Callable[[], Timeline]) -> None:
    """Wrap the runtime's start and spawn and the health check to mark each phase."""
    rt = app.runtime
    start = rt.start

    async def timed_start(instance: Any, target: Any) -> None:
        current().mark("start")
        await start(instance, target)
        if runtime == "docker":
            current().mark("spawn")

    rt.start = timed_start
    if runtime == "local":
        spawn = rt._spawn

        async def timed_spawn(instance: Any, port: int) -> Any:
            proc = await spawn(instance, port)
            timeline = current()
            timeline.mark("spawn")
            timeline.listen_task = asyncio.get_running_loop().create_task(
                until_listening(port, timeline)
            )
            return proc

        rt._spawn = timed_spawn
    check = health_module.check

    async def timed_check(target: Any, timeout: float) -> tuple[bool, str]:
        ok, error = await check(target, timeout)
        if ok:
            current().mark("healthy")
        else:
            current().failed_checks += 1
        return ok, error

    health_module.check = timed_check  # type: ignore[assignment]


def import_time() -> float:
    """Seconds for a bare Python to import Datasette's CLI (a floor for a local start)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import datasette.cli"], check=True)
    return time.monotonic() - started


async def main(runtime: str, rounds: int, wakes: int) -> dict[str, Any]:
    cold: list[list[float]] = []
    woke: list[list[float]] = []
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    failed_checks: list[int] = []
    timeline = Timeline()
    with tempfile.TemporaryDirectory(prefix="sleep-bench-") as tmp:
        sock = free_socket()
        port = sock.getsockname()[1]
        config = from_env(  # GATEWAY_* variables apply (GATEWAY_LOCAL_START=exec)
            data_dir=Path(tmp),
            domain="localhost",
            port=port,
            runtime=runtime,
            hold_timeout=60,
            watch_interval=0.05,
            idle_timeout=0,
        )
        app = create_app(config)
        instrument(app, runtime, lambda: timeline)
        server, task = await serve_app(app, sock)
        try:
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=90) as client:
                for n in range(rounds):
                    slug = f"cold{n}"
                    app.store.create_team(slug)
                    app.store.query("UPDATE teams SET public = 1 WHERE slug = ?", [slug])
                    app.auth.changed()  # public at once: the benchmark is not about auth
                    url = f"http://{slug}.localhost:{port}/data.json"
                    cold.append([await first_200(client, url)])
                    woke.append([])
                    for _ in range(wakes):
                        asleep = app.fleet.sleep(slug)
                        assert asleep is not None
                        await asleep
                        timeline = Timeline()
                        started = time.monotonic()
                        r = await client.get(url)
                        assert r.status_code == 200, r.text
                        timeline.mark("served")
                        woke[-1].append(time.monotonic() - started)
                        for phase, took in timeline.durations(started).items():
                            phases[phase].append(took)
                        failed_checks.append(timeline.failed_checks)
                        if timeline.listen_task is not None:
                            timeline.listen_task.cancel()
                    asleep = app.fleet.sleep(slug)  # one instance awake at a time
                    if asleep is not None:
                        await asleep
        finally:
            server.should_exit = True
            await task
            if runtime == "docker":  # containers outlive a gateway: remove this run's
                remove_gateway_containers(app.gateway_id)
    report(runtime, cold, woke, phases, failed_checks)
    if runtime == "local":
        print(f"  for scale: a bare `python -c 'import datasette.cli'` {import_time():.2f}s")
    return {"cold": cold, "wake": woke, "phases": phases}


def report(
    runtime: str,
    cold: list[list[float]],
    woke: list[list[float]],
    phases: dict[str, list[float]],
    failed_checks: list[int],
) -> None:
    def line(name: str, per_round: list[list[float]]) -> str:
        flat = [v for r in per_round for v in r]
        medians = [statistics.median(r) for r in per_round]
        return (
            f"  {name:<22} p50 {pct(flat, 50):.2f}s  p95 {pct(flat, 95):.2f}s"
            f"  (round medians {min(medians):.2f}-{max(medians):.2f}s, n={len(flat)})"
        )

    print(f"runtime {runtime}: {len(cold)} round(s), each a cold create then its wakes")
    print(line("cold create -> 200", cold))
    print(line("wake -> 200", woke))
    print("  where a wake's time goes (p50 / p95 of each phase's own share):")
    for phase in PHASES:
        if phases[phase]:
            values = phases[phase]
            print(f"    {phase:<8} {pct(values, 50):.3f}s / {pct(values, 95):.3f}s")
    mean_failed = statistics.mean(failed_checks)
    print(f"    failed health checks before the first pass: mean {mean_failed:.1f}")


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS shares each shared page among its users."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def instance_pids(app: Any) -> list[int]:
    runtime = app.runtime
    found = [runtime.pid(i) for i in list(runtime._running)]
    return [p for p in found if p is not None]


async def density(teams: int, active: int, seconds: float) -> None:
    import os

    gateway_pid = os.getpid()
    names = [f"t{n:03d}" for n in range(teams)]
    step = max(1, teams // active)
    busy = names[::step][:active]
    failed: dict[str, int] = {}
    served = 0
    with tempfile.TemporaryDirectory(prefix="sleep-density-") as tmp:
        sock = free_socket()
        port = sock.getsockname()[1]
        config = from_env(  # GATEWAY_* variables apply (GATEWAY_LOCAL_START=exec)
            data_dir=Path(tmp),
            domain="localhost",
            port=port,
            runtime="local",
            hold_timeout=60,
            idle_timeout=15,
            max_awake=active,
        )
        app = create_app(config)
        server, task = await serve_app(app, sock)
        try:
            await asyncio.sleep(1)
            empty_rss, _ = memory_kb(gateway_pid)
            started = time.monotonic()
            for slug in names:  # as `gateway teams create` does, then public for reads
                app.store.create_team(slug)
            app.store.query("UPDATE teams SET public = 1")
            app.auth.changed()
            while len(app.fleet.services) < teams:
                if time.monotonic() - started > 300:
                    raise SystemExit("the fleet did not route every team within 300 s")
                await asyncio.sleep(0.1)
            registered = time.monotonic() - started
            awake_now = sum(not s.sleeping for s in app.fleet.services.values())
            print(f"registered {teams} teams in {registered:.1f}s; {awake_now} started awake")
            routed_rss, _ = memory_kb(gateway_pid)
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=90) as client:

                async def one(slug: str) -> None:
                    nonlocal served
                    try:
                        r = await client.get(f"http://{slug}.localhost:{port}/data.json")
                    except httpx.HTTPError as exc:
                        failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1
                        return
                    if r.status_code == 200:
                        served += 1
                    else:
                        failed[str(r.status_code)] = failed.get(str(r.status_code), 0) + 1

                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    tick = time.monotonic()
                    await asyncio.gather(*(one(slug) for slug in busy))
                    await asyncio.sleep(max(0.0, 3 - (time.monotonic() - tick)))
                # Let the sleeps under way finish stopping their instances.
                settle = time.monotonic() + 60
                while len(instance_pids(app)) > active and time.monotonic() < settle:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                await asyncio.gather(*(one(slug) for slug in busy))  # all still served
                states = [s.state() for s in app.fleet.services.values()]
                pids = instance_pids(app)
                gateway_rss, gateway_pss = memory_kb(gateway_pid)
                instances = [memory_kb(p) for p in pids]
                zygote_pid = app.runtime.zygote.pid if app.runtime.zygote else None
                zygote = memory_kb(zygote_pid) if zygote_pid else (0, 0)
        finally:
            server.should_exit = True
            await task
    one_rss = statistics.median(r for r, _ in instances)
    total_rss = gateway_rss + zygote[0] + sum(r for r, _ in instances)
    total_pss = gateway_pss + zygote[1] + sum(p for _, p in instances)
    target = 25 * one_rss + gateway_rss
    mib = 1024
    print(
        f"after {seconds:.0f}s with {active} active: {states.count('sleeping')} sleeping, "
        f"{len(pids)} instance(s) running; {served} requests served, failed: {failed or 0}"
    )
    print(f"  one instance (median RSS)   {one_rss / mib:7.1f} MiB", end="")
    print(f" (PSS {statistics.median(p for _, p in instances) / mib:.1f} MiB)")
    if zygote[0]:
        print(f"  the zygote (local_start=fork) {zygote[0] / mib:5.1f} MiB RSS, counted below")
    print(f"  the gateway                 {gateway_rss / mib:7.1f} MiB RSS", end="")
    print(f" ({gateway_pss / mib:.1f} PSS)")
    print(
        f"  all together                {total_rss / mib:7.1f} MiB RSS ({total_pss / mib:.1f} PSS)"
        f"  target <= 25 x one + gateway = {target / mib:.1f} MiB: "
        f"{'met' if total_rss <= target else 'MISSED'} ({total_rss / target:.2f} of it)"
    )
    per_team = (routed_rss - empty_rss) / teams
    print(
        f"  the gateway's own RSS per registered team: {per_team:.1f} KiB "
        f"({empty_rss / mib:.1f} MiB with none, {routed_rss / mib:.1f} MiB with {teams} routed)"
    )
    if failed:
        raise SystemExit(f"failed requests: {failed}")


def against(baseline: Path, runtime: str, rounds: int, wakes: int) -> None:
    """Interleaved rounds: the baseline tree's code, then this tree's, each in a fresh process."""
    if not (baseline / "gateway" / "fleet.py").is_file():
        raise SystemExit(f"{baseline} is no checkout of the gateway (no gateway/fleet.py)")
    trees = (("baseline", baseline.resolve()), ("this tree", HERE))
    results: dict[str, list[list[float]]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="sleep-against-") as tmp:
        for n in range(rounds):
            for name, tree in trees:
                out = Path(tmp) / f"{n}-{name}.json"
                env = {**os.environ, "SLEEP_BENCH_TREE": str(tree), "GATEWAY_NATIVE": "0"}
                args = ["--runtime", runtime, "--rounds", "1", "--wakes", str(wakes)]
                cmd = [sys.executable, __file__, *args, "--json", str(out)]
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=900)
                results[name].append(json.loads(out.read_text())["wake"][0])
                wake = results[name][-1]
                print(
                    f"round {n + 1} {name:<9} wake p50 {pct(wake, 50):.2f}s"
                    f"  p95 {pct(wake, 95):.2f}s",
                    flush=True,
                )
    print(f"runtime {runtime}: {rounds} interleaved round(s) of {wakes} wakes each")
    for p in (50, 95):
        base = [pct(r, p) for r in results["baseline"]]
        this = [pct(r, p) for r in results["this tree"]]
        ratios = [t / b for t, b in zip(this, base, strict=True)]
        print(
            f"  p{p}: baseline {min(base):.2f}-{max(base):.2f}s, this tree "
            f"{min(this):.2f}-{max(this):.2f}s; ratio per round "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wakes", type=int, default=4, help="wakes per round")
    parser.add_argument("--density", action="store_true", help="the density figure instead")
    parser.add_argument(
        "--against", type=Path, help="a baseline checkout: interleaved before/after rounds"
    )
    parser.add_argument("--json", type=Path, help="also write the wake samples here")
    parser.add_argument("--teams", type=int, default=500, help="teams registered (--density)")
    parser.add_argument("--active", type=int, default=20, help="teams kept busy (--density)")
    parser.add_argument("--seconds", type=float, default=60, help="busy for (--density)")
    args = parser.parse_args()
    if args.density:
        asyncio.run(density(max(1, args.teams), max(1, args.active), max(3.0, args.seconds)))
    elif args.against is not None:
        against(args.against, args.runtime, max(1, args.rounds), max(1, args.wakes))
    else:
        samples = asyncio.run(main(args.runtime, max(1, args.rounds), max(1, args.wakes)))
        if args.json is not None:
            args.json.write_text(json.dumps(samples))
