"""The zero-downtime proof: mixed load against three teams while the gateway deploys.

    python -m tests.load.scenario            # full form (~3 min): prints the table
    python -m tests.load.scenario --short    # CI form (~60 s)
    ... --traefik / --gateway-tls            # through Traefik / over the gateway's own TLS

It starts a real `gateway serve` (local runtime) on loopback with three teams, each with an
`events` table and a writable canned query, then drives mixed traffic at a fixed rate:
HTML table pages, JSON, SQL queries and POST writes. While the load runs it first puts a
fourth team to sleep and wakes it with a burst of the same kinds of request (held until its
instance is up, none failed), then performs 10 consecutive deploys of one team, one
`deploy --all` rollout, one `gateway restart` and a restore of one team to "now"
(tests/load/restore_step.py), each through the real CLI.
Afterwards it reads every team's database (the restored one included) to check that each
POST was applied exactly once when it succeeded and never when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.config import Config
from gateway.server import uvicorn_config
from tests.load.restore_step import restore_step
from tests.systemd_gateway import listening_socket

TEAMS = ("loada", "loadb", "loadc")  # under the load throughout
SLEEPER = "loadz"  # no load: put to sleep, then woken by a burst while the load runs
WAKE_BURST = 12  # concurrent first requests of the sleeper (every kind of the mix)
METADATA = {
    "databases": {
        "data": {
            "queries": {
                "add_event": {
                    "sql": "insert into events (uid, team) values (:uid, :team)",
                    "write": True,
                }
            }
        }
    }
}
# (weight, kind): what a journalist's browser and scripts do to a team's Datasette.
MIX = ((3, "html"), (3, "json"), (2, "sql"), (2, "post"))
# Outstanding requests at most: below the client's connection limit, so requests never queue
# inside httpx (see drive()).
MAX_IN_FLIGHT = 48
# The client drops an idle connection well before the gateway's keep-alive timeout (uvicorn's
# timeout_keep_alive, read from the settings it runs with) closes it: half of it, because the
# client's clock starts when it has read a response, later than the server's, and a busy test
# process reads late. Traefik's idleConnTimeout in certs/dynamic.yml follows the same rule.
# Reusing a connection the server is closing at that moment is HTTP/1.1's keep-alive race (RFC
# 9112 section 9.3.1), which the deploys, restarts and renewals under test do not cause; with a
# POST it would be a failed request the client cannot resend.
KEEPALIVE_EXPIRY = float(uvicorn_config(None, Config()).timeout_keep_alive) / 2
LIMITS = httpx.Limits(
    max_connections=64, max_keepalive_connections=32, keepalive_expiry=KEEPALIVE_EXPIRY
)


@dataclass
class Sample:
    at: float
    kind: str
    team: str
    outcome: str  # "ok" or the failure kind (status code or exception name)
    ms: float
    uid: str = ""


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    ops: list[tuple[str, int, float]] = field(default_factory=list)
    # GETs resent after the server closed a reused keep-alive connection before any response
    # byte (allowed by RFC 9112 section 9.3.1; reported apart, bounded at 0 in CI).
    reused_resends: int = 0
    client_waits: int = 0  # requests that waited for a free slot (the machine was saturated)


class Https(httpx.AsyncHTTPTransport):
    """Every request over TLS to 127.0.0.1:``port``, the Host header naming the TLS server: the
    scenario's own requests (``http://127.0.0.1:<gateway port>``) reach an HTTPS listener as
    they are."""

    def __init__(self, port: int, tls: ssl.SSLContext) -> None:
        super().__init__(verify=tls, limits=LIMITS)
        self.port = port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        server_name = request.headers["host"].rsplit(":", 1)[0]
        request.url = request.url.copy_with(scheme="https", host="127.0.0.1", port=self.port)
        request.extensions = {**request.extensions, "sni_hostname": server_name}
        return await super().handle_async_request(request)


class Edge:
    """What the load crosses to reach the gateway. This one: nothing, plain HTTP to its port.

    The same scenario runs through other edges by overriding these steps:
    ``tests/load/edge.py`` (the real Traefik in front, and its upgrade under the load) and
    ``tests/load/gateway_tls.py`` (the gateway's own TLS from Traefik's ACME store, and a
    certificate renewal under the load)."""

    def prepare(self, work: Path, port: int) -> dict[str, str]:
        """Before the gateway starts: extra environment for ``gateway serve``."""
        return {}

    def to_gateway(self) -> httpx.AsyncBaseTransport | None:
        """A fresh transport straight to the gateway's port (None: plain HTTP)."""
        return None

    def to_load(self) -> httpx.AsyncBaseTransport | None:
        """A fresh transport for the load's client, once ``start`` has run."""
        return self.to_gateway()

    async def start(self) -> None:
        """Once the gateway serves every team, before the load."""

    async def operate(self, run: Run) -> None:
        """After the gateway's own operations, still under the load."""

    def stop(self) -> None:
        """Whatever ``start`` started; the gateway itself is stopped by the scenario."""


def cli(data_dir: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """One real CLI command; bounded, so a stuck command is a failed op, never a hung run."""
    cmd = [sys.executable, "-m", "gateway", *args, "--data-dir", str(data_dir), "--port", str(port)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return subprocess.CompletedProcess(cmd, -1, out, "timed out after 120 s")


def prepare(data_dir: Path, port: int) -> dict[str, str]:
    """Teams, tables, canned write queries and one API token per team; returns the tokens."""
    from gateway.auth import accounts
    from gateway.auth.tokens import Tokens
    from gateway.store import open_store

    for team in (*TEAMS, SLEEPER):
        done = cli(data_dir, port, "teams", "create", team)
        if done.returncode:
            raise SystemExit(done.stderr)
        team_dir = data_dir / "teams" / team
        db = sqlite3.connect(team_dir / "data.db")
        db.execute(
            "create table if not exists events (id integer primary key, uid text, team text)"
        )
        db.executemany(
            "insert into events (uid, team) values (?, ?)", [(f"seed-{i}", team) for i in range(50)]
        )
        db.commit()
        db.close()
        (team_dir / "metadata.json").write_text(json.dumps(METADATA))
    store = open_store(data_dir / "control.db")
    user = accounts.create_user(store, "load@example.org", "-")
    tokens = Tokens(store)
    out = {}
    for team in (*TEAMS, SLEEPER):
        accounts.add_member(store, team, user.id, "owner")
        out[team] = tokens.create(team, user.id, "load test")
    store.close()
    return out


def start_gateway(
    data_dir: Path, public: socket.socket, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``gateway serve`` given its public listener as systemd gives it (LISTEN_FDS): bound here
    on port 0 and read back, so no other process can take the port between a "free port" probe
    and the gateway's bind. The socket is closed here once passed on."""
    port = public.getsockname()[1]
    root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "GATEWAY_HOLD_TIMEOUT": "30",
        "GATEWAY_ADMIN_PORT": "0",
        "GATEWAY_LOG_LEVEL": os.environ.get("GATEWAY_LOG_LEVEL", "warning"),
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        **(extra_env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "tests.systemd_gateway",  # moves the socket to fd 3 and sets LISTEN_PID, then execs
        str(public.fileno()),
        "public",
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    try:
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=[public.fileno()],
            )
    finally:
        public.close()  # the gateway's copy is the only one: it alone decides when it closes


async def wait_ready(
    data_dir: Path,
    port: int,
    timeout: float = 60,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Every team up, read from status.json with the admin token the gateway wrote at start."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5, transport=transport) as client:
        while time.monotonic() < deadline:
            try:
                token = (data_dir / "admin.token").read_text().strip()
                r = await client.get(
                    f"http://127.0.0.1:{port}/-/gateway/status.json",
                    headers={"host": "localhost", "authorization": f"Bearer {token}"},
                )
                teams = r.json()["teams"]
                if len(teams) == len(TEAMS) + 1 and all(t["state"] == "up" for t in teams):
                    return
            except (httpx.HTTPError, ValueError, KeyError, OSError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not become ready; see its log")


async def get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], params: dict[str, str], run: Run
) -> httpx.Response:
    """A GET sent as an HTTP/1.1 client may send it (RFC 9112 section 9.3.1): only when a
    REUSED keep-alive connection is closed by the server before any response byte (the race
    of closing an idle connection) may the idempotent request go once more, on a new
    connection. Such a resend is counted apart (``reused_resends``; CI bounds it at 0). A
    failure on a fresh connection, or after the response began, is never resent: it is a
    failed request."""
    for attempt in (1, 2):
        opened = False
        started = False

        async def trace(event: str, info: dict[str, Any]) -> None:
            nonlocal opened
            if event.startswith("connection.connect_tcp."):
                opened = True

        try:
            async with client.stream(
                "GET", url, headers=headers, params=params, extensions={"trace": trace}
            ) as r:
                started = True
                await r.aread()
                return r
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if started or opened or attempt == 2:
                raise
            run.reused_resends += 1
    raise AssertionError("unreachable")


async def one(
    client: httpx.AsyncClient, port: int, team: str, token: str, kind: str, run: Run
) -> None:
    headers = {"host": f"{team}.localhost:{port}", "authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"
    uid = ""
    t0 = time.perf_counter()
    try:
        if kind == "html":
            r = await get(client, f"{base}/data/events", headers, {"_size": "20"}, run)
        elif kind == "json":
            r = await get(client, f"{base}/data/events.json", headers, {"_size": "20"}, run)
        elif kind == "sql":
            sql = {"sql": "select count(*), max(id) from events"}
            r = await get(client, f"{base}/data.json", headers, sql, run)
        else:
            # Never retried: a POST that was sent may have been applied (exactly-once check).
            uid = uuid.uuid4().hex
            r = await client.post(
                f"{base}/data/add_event?_json=1", headers=headers, data={"uid": uid, "team": team}
            )
        ok = r.status_code == 200 and (kind != "post" or r.json().get("ok") is True)
        outcome = "ok" if ok else str(r.status_code)
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    run.samples.append(
        Sample(time.monotonic(), kind, team, outcome, (time.perf_counter() - t0) * 1000, uid)
    )


async def drive(
    port: int,
    tokens: dict[str, str],
    rate: float,
    stop: asyncio.Event,
    run: Run,
    max_requests: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Open-loop load at ``rate`` req/s, bounded by ``max_requests`` and by ``stop``.

    At most ``MAX_IN_FLIGHT`` requests are outstanding: on a machine too slow for ``rate``
    the load turns closed-loop (the next request waits for a free slot, counted as
    ``client_waits``) instead of piling up requests in the client until the client itself,
    not the gateway, is what fails (httpx scans its queue of waiting requests on every
    event, so a long queue starves the whole test process)."""
    kinds = [k for w, k in MIX for _ in range(w)]
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    # A given transport carries the same LIMITS (httpx ignores the client's then).
    async with httpx.AsyncClient(timeout=60, limits=LIMITS, transport=transport) as client:
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for i in range(max_requests):
            if stop.is_set():
                break
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():
                run.client_waits += 1
            await slots.acquire()
            team = random.choice(TEAMS)
            task = asyncio.create_task(
                one(client, port, team, tokens[team], random.choice(kinds), run)
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda _: slots.release())
        await asyncio.gather(*pending)


async def team_state(
    data_dir: Path, port: int, team: str, transport: httpx.AsyncBaseTransport | None
) -> str:
    token = (data_dir / "admin.token").read_text().strip()
    async with httpx.AsyncClient(timeout=10, transport=transport) as client:
        r = await client.get(
            f"http://127.0.0.1:{port}/-/gateway/status.json",
            headers={"host": "localhost", "authorization": f"Bearer {token}"},
        )
    return str(next(t["state"] for t in r.json()["teams"] if t["slug"] == team))


async def wake_step(
    data_dir: Path,
    port: int,
    tokens: dict[str, str],
    run: Run,
    edge: Edge,
) -> None:
    """The sleeper sleeps (its own idle timeout of 1 s, set with the CLI; back to the default
    once asleep, so it stays awake after), then WAKE_BURST requests of every kind of the mix
    at once wake it under the load. Its requests are samples like the load's: held, never
    failed. One op, failed if any step did or the sleeper is not up afterwards."""
    t0 = time.monotonic()
    problems = []
    set_short = await asyncio.to_thread(cli, data_dir, port, "teams", "idle-timeout", SLEEPER, "1")
    if set_short.returncode:
        problems.append(f"idle-timeout 1: {set_short.stderr}")
    deadline = time.monotonic() + 60
    while await team_state(data_dir, port, SLEEPER, edge.to_gateway()) != "sleeping":
        if time.monotonic() > deadline:
            problems.append(f"{SLEEPER} did not sleep within 60 s")
            break
        await asyncio.sleep(0.2)
    back = await asyncio.to_thread(cli, data_dir, port, "teams", "idle-timeout", SLEEPER, "default")
    if back.returncode:
        problems.append(f"idle-timeout default: {back.stderr}")
    asleep_at = time.monotonic()
    kinds = [k for _, k in MIX]
    before = len(run.samples)
    async with httpx.AsyncClient(timeout=60, limits=LIMITS, transport=edge.to_load()) as client:
        await asyncio.gather(
            *(
                one(client, port, SLEEPER, tokens[SLEEPER], kinds[i % len(kinds)], run)
                for i in range(WAKE_BURST)
            )
        )
    woken = time.monotonic() - asleep_at
    burst = run.samples[before:]
    if bad := [f"{s.kind} {s.outcome}" for s in burst if s.team == SLEEPER and s.outcome != "ok"]:
        problems.append(f"the waking requests failed: {bad}")
    if (state := await team_state(data_dir, port, SLEEPER, edge.to_gateway())) != "up":
        problems.append(f"{SLEEPER} is {state} after the burst")
    run.ops.append((f"wake {SLEEPER} under load", 1 if problems else 0, time.monotonic() - t0))
    say(f"{SLEEPER}: asleep, then woken by {WAKE_BURST} requests in {woken:.1f}s")
    for problem in problems:
        print(f"  wake {SLEEPER}: {problem}", file=sys.stderr)


async def operate(
    data_dir: Path, port: int, deploys: int, run: Run, old: subprocess.Popen[bytes]
) -> None:
    async def op(name: str, *args: str) -> None:
        t0 = time.monotonic()
        done = await asyncio.to_thread(cli, data_dir, port, *args)
        run.ops.append((name, done.returncode, time.monotonic() - t0))
        say(f"{name}: {'ok' if done.returncode == 0 else 'FAILED'} in {time.monotonic() - t0:.1f}s")
        if done.returncode:
            print(f"  {name} failed: {done.stdout}{done.stderr}", file=sys.stderr)

    for i in range(deploys):
        await op(f"deploy {TEAMS[0]} #{i + 1}", "deploy", "--team", TEAMS[0])
    await op("deploy --all", "deploy", "--all")
    await op("gateway restart", "restart")
    # The old process drains its in-flight requests while the successor serves; the
    # operations end once it has exited (its exit status is checked like a command's).
    t0 = time.monotonic()
    try:
        code = await asyncio.to_thread(old.wait, 120)
    except subprocess.TimeoutExpired:
        code = -1
    run.ops.append(("old gateway exited", code, time.monotonic() - t0))
    say(f"the old gateway exited with {code} in {time.monotonic() - t0:.1f}s")
    await restore_step(op, TEAMS[0])  # last: the exactly-once check reads the restored file


def say(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def exactly_once(data_dir: Path, run: Run) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for team in (*TEAMS, SLEEPER):
        db = sqlite3.connect(data_dir / "teams" / team / "data.db")
        for (uid,) in db.execute("select uid from events where uid not like 'seed-%'"):
            counts[uid] += 1
        db.close()
    report = Counter()
    for s in run.samples:
        if s.kind != "post":
            continue
        n = counts.get(s.uid, 0)
        if s.outcome == "ok":
            report["applied once" if n == 1 else f"succeeded but applied {n}x"] += 1
        else:
            report["failed, never applied" if n == 0 else f"failed but applied {n}x"] += 1
    return dict(report)


def summarize(run: Run, posts: dict[str, int]) -> dict[str, Any]:
    start, end = run.marks["ops_start"], run.marks["ops_end"]
    phases: dict[str, list[Sample]] = {"before": [], "during": [], "after": []}
    for s in run.samples:
        phases["before" if s.at < start else "during" if s.at <= end else "after"].append(s)
    failures = Counter(f"{s.kind} {s.outcome}" for s in run.samples if s.outcome != "ok")
    table = {}
    for name, samples in phases.items():
        ms = sorted(s.ms for s in samples) or [0.0]
        table[name] = {
            "requests": len(samples),
            "failures": sum(s.outcome != "ok" for s in samples),
            "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        }
    duration = run.marks["load_end"] - run.marks["load_start"]
    return {
        "total": len(run.samples),
        "rate": round(len(run.samples) / duration, 1),
        "failed_gets": sum(1 for s in run.samples if s.kind != "post" and s.outcome != "ok"),
        "failures_by_kind": dict(failures),
        # When, against the operations (they run back to back from 0 s, durations in "ops").
        "failures_at": [
            f"{s.kind} {s.outcome} at {s.at - start:+.1f}s"
            for s in run.samples
            if s.outcome != "ok"
        ][:20],
        "failures": sum(1 for s in run.samples if s.outcome != "ok"),
        "failed_posts": sum(1 for s in run.samples if s.kind == "post" and s.outcome != "ok"),
        "reused_resends": run.reused_resends,
        "client_waits": run.client_waits,
        "posts": posts,
        # The burst that woke the sleeper (wake_step), each held until its instance was up.
        "sleeper": [
            {"kind": s.kind, "outcome": s.outcome, "ms": round(s.ms, 1)}
            for s in run.samples
            if s.team == SLEEPER
        ],
        "phases": table,
        "ops": [{"op": n, "rc": rc, "seconds": round(t, 1)} for n, rc, t in run.ops],
    }


def verdict(r: dict[str, Any], *, max_resends: int = 0) -> list[str]:
    """What broke the promise "0 failed requests": empty when the run proved it."""
    problems = []
    if bad_ops := [op for op in r["ops"] if op["rc"] != 0]:
        problems.append(f"operations failed: {bad_ops}")
    if r["failures"]:
        problems.append(f"{r['failures']} failed requests: {r['failures_by_kind']}")
    if set(r["posts"]) != {"applied once"}:
        problems.append(f"POSTs not all applied exactly once: {r['posts']}")
    if r["reused_resends"] > max_resends:
        problems.append(f"{r['reused_resends']} GETs resent on a reused connection")
    if not all(p["requests"] > 0 for p in r["phases"].values()):
        problems.append(f"a phase saw no request: {r['phases']}")
    return problems


def print_report(r: dict[str, Any]) -> None:
    print(f"\n{r['total']} requests at {r['rate']} req/s; failed GETs: {r['failed_gets']}")
    print(f"{'phase':<8} {'requests':>9} {'failures':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, p in r["phases"].items():
        print(f"{name:<8} {p['requests']:>9} {p['failures']:>9} {p['p50_ms']:>8} {p['p99_ms']:>8}")
    print("failures by kind:", r["failures_by_kind"] or "none")
    if r["failures_at"]:
        print("failures, seconds after the operations began:", "; ".join(r["failures_at"]))
    print(f"failed POSTs: {r['failed_posts']}")
    print(
        "GETs resent after the server closed a reused keep-alive connection before any byte "
        "(RFC 9112 9.3.1):",
        r["reused_resends"],
    )
    print(
        f"requests that waited for one of the client's {MAX_IN_FLIGHT} slots "
        "(the machine could not keep up with the offered rate):",
        r["client_waits"],
    )
    print("POST outcomes:   ", r["posts"])
    if r["sleeper"]:
        ms = sorted(s["ms"] for s in r["sleeper"])
        ok = sum(s["outcome"] == "ok" for s in r["sleeper"])
        print(f"waking {SLEEPER}: {ok}/{len(ms)} served, held {ms[0]:.0f}-{ms[-1]:.0f} ms")
    for op in r["ops"]:
        print(f"  {op['op']:<22} rc={op['rc']} {op['seconds']}s")


async def scenario(
    *,
    rate: float,
    warmup: float,
    cooldown: float,
    deploys: int,
    work_dir: Path | None = None,
    edge: Edge | None = None,
) -> dict[str, Any]:
    edge = edge or Edge()
    tmp = Path(work_dir or tempfile.mkdtemp(prefix="gateway-load-"))
    public = listening_socket()
    data_dir, port = tmp / "data", public.getsockname()[1]
    say(f"preparing {len(TEAMS)} teams and a sleeper in {tmp}")
    tokens = prepare(data_dir, port)
    proc = start_gateway(data_dir, public, tmp / "gateway.log", edge.prepare(tmp, port))
    run = Run()
    try:
        await wait_ready(data_dir, port, transport=edge.to_gateway())
        await edge.start()
        say(f"gateway ready on port {port}; load at {rate:.0f} req/s through {type(edge).__name__}")
        stop = asyncio.Event()
        run.marks["load_start"] = time.monotonic()
        load = asyncio.create_task(
            drive(port, tokens, rate, stop, run, max_requests=100_000, transport=edge.to_load())
        )
        await asyncio.sleep(warmup)
        run.marks["ops_start"] = time.monotonic()
        await wake_step(data_dir, port, tokens, run, edge)
        await operate(data_dir, port, deploys, run, proc)
        await edge.operate(run)
        run.marks["ops_end"] = time.monotonic()
        say("operations done; cooling down")
        await asyncio.sleep(cooldown)
        stop.set()
        await load
        run.marks["load_end"] = time.monotonic()
    finally:
        try:
            edge.stop()
        finally:
            _stop_all(data_dir, proc)
    result = summarize(run, exactly_once(data_dir, run))
    result["log"] = str(tmp / "gateway.log")
    if work_dir is None and not result["failures_by_kind"]:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _stop_all(data_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    """Stop the gateway we started and its successor (after `gateway restart`)."""
    pids = {proc.pid}
    with contextlib.suppress(OSError, ValueError, KeyError):
        pids.add(int(json.loads((data_dir / "admin.json").read_text())["pid"]))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 30
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if pid == proc.pid and proc.poll() is not None:
                break
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the ~60 s CI form")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--deploys", type=int, default=0, help="deploys of one team (10)")
    parser.add_argument(
        "--traefik",
        action="store_true",
        help="through the real Traefik, plus a Traefik upgrade under load (tests/load/edge.py)",
    )
    parser.add_argument(
        "--gateway-tls",
        action="store_true",
        help="HTTPS served by the gateway from Traefik's acme.json, plus a certificate renewal "
        "under load (tests/load/gateway_tls.py)",
    )
    parser.add_argument(
        "--max-resends",
        type=int,
        default=0,
        help="GET resends on a reused connection to tolerate (RFC 9112 9.3.1); CI: 0",
    )
    args = parser.parse_args()
    if args.short:
        kw = {"warmup": 8.0, "cooldown": 8.0, "deploys": args.deploys or 10}
    else:
        kw = {"warmup": 30.0, "cooldown": 30.0, "deploys": args.deploys or 10}
    edge = Edge()
    if args.traefik:  # each edge lives in its own file
        from tests.load.edge import ThroughTraefik

        edge = ThroughTraefik()
    elif args.gateway_tls:
        from tests.load.gateway_tls import GatewayTls

        edge = GatewayTls()
    report = asyncio.run(scenario(rate=args.rate, edge=edge, **kw))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    problems = verdict(report, max_resends=args.max_resends)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
