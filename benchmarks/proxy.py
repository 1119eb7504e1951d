"""Proxy benchmark: the gateway side by side with nginx and with no proxy at all, in one run.

    .venv/bin/python benchmarks/proxy.py [--duration 10 | --quick] [--skip-datasette]

Part 1, a tiny upstream (nginx answering a fixed small JSON with ``return 200``):
    direct   wrk -> upstream
    nginx    wrk -> nginx (reference reverse proxy, keep-alive pool) -> upstream
    gateway  wrk -> gateway (real uvicorn process, StaticRuntime) -> upstream
Part 2, a real Datasette table page (the embedded local runtime, one team, a small table):
    direct   wrk -> that team's Datasette port
    gateway  wrk -> gateway -> Datasette

Each pair runs wrk --latency for a bounded time at 50 connections and at 1 connection. The
table shows req/s, p50, p99, the ratio against the baseline and the p50 the proxy adds at one
connection, next to the targets from issue 2. It also shows each server's CPU time per request,
which is far steadier than req/s on a shared machine. Needs ``nginx`` and ``wrk`` (Debian
packages); everything listens on 127.0.0.1 and lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    TEAM,
    TEAM_HOST,
    Processes,
    WrkResult,
    free_port,
    group_pids,
    nginx_proxy_conf,
    nginx_upstream_conf,
    require_tools,
    run_wrk,
    start_nginx,
    wait_http,
)

from gateway.runtimes.base import prepare_team_dir

HERE = Path(__file__).resolve().parent
CONNECTIONS = 50
# Targets from issue 2, section 8.
TARGET_VS_NGINX = 0.5
TARGET_VS_DATASETTE = 0.9
TARGET_ADDED_P50_MS = 0.3


@dataclass
class Subject:
    """One thing wrk is pointed at."""

    name: str
    port: int
    path: str = "/"
    host: str | None = None
    cpu_pids: list[int] | None = None
    upstream_pids: list[int] | None = None


@dataclass
class Row:
    name: str
    many: WrkResult  # at CONNECTIONS connections (the median round)
    one: WrkResult  # at 1 connection (the median round)
    rounds: list[WrkResult]  # every round at CONNECTIONS connections, for the spread
    rounds_one: list[WrkResult]  # every round at 1 connection

    @property
    def bad(self) -> int:
        """Errors in ANY round fail the run, not only in the median one."""
        return sum(r.bad for r in self.rounds + self.rounds_one)

    def spread(self) -> str:
        """Max minus min req/s across the rounds, relative to the median."""
        if len(self.rounds) < 2:
            return "-"
        rps = [r.rps for r in self.rounds]
        return f"{(max(rps) - min(rps)) / self.many.rps * 100:.0f}%"


class Verdicts:
    """Every target and error of a run: main() exits 1 if any was missed (or only reports)."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(self, label: str, value: str, ok: bool | None) -> str:
        """``ok`` None: a figure shown for information, with no target."""
        if ok is False:
            self.missed.append(label)
        mark = "info" if ok is None else "ok" if ok else "MISSED"
        return f"  {label:<46} {value:>10}   {mark}"

    def errors(self, rows: list[Row]) -> None:
        for r in rows:
            if r.bad:
                self.missed.append(f"{r.name}: {r.bad} errors or non-2xx answers")


VERDICTS = Verdicts()


def measure(subjects: list[Subject], duration: float, rounds: int) -> list[Row]:
    """Warm every subject up, then run the subjects in turn (rounds interleaved) at both loads."""
    for s in subjects:
        run_wrk(s.port, s.path, connections=CONNECTIONS, duration=1, host=s.host)
    many: dict[str, list[WrkResult]] = {s.name: [] for s in subjects}
    one: dict[str, list[WrkResult]] = {s.name: [] for s in subjects}
    for _ in range(rounds):
        for s in subjects:
            many[s.name].append(
                run_wrk(
                    s.port,
                    s.path,
                    connections=CONNECTIONS,
                    duration=duration,
                    host=s.host,
                    cpu_pids=s.cpu_pids,
                    upstream_pids=s.upstream_pids,
                )
            )
        for s in subjects:
            one[s.name].append(
                run_wrk(
                    s.port,
                    s.path,
                    connections=1,
                    duration=duration,
                    host=s.host,
                    cpu_pids=s.cpu_pids,
                )
            )
    rows = [
        Row(s.name, median(many[s.name]), median(one[s.name]), many[s.name], one[s.name])
        for s in subjects
    ]
    VERDICTS.errors(rows)
    return rows


def median(results: list[WrkResult]) -> WrkResult:
    """The run with the median req/s: a whole run, so its percentiles belong to it."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}"


def table(title: str, rows: list[Row], baseline: str, direct: str) -> str:
    base = next(r for r in rows if r.name == baseline)
    ref = next(r for r in rows if r.name == direct)
    lines = [
        title,
        f"{'':10}{'--- ' + str(CONNECTIONS) + ' connections ':-<48}  {'--- 1 connection ':-<40}",
        f"{'':10}{'req/s':>9} {'spread':>7} {'p50 ms':>8} {'p99 ms':>8} {'vs ' + baseline:>10}"
        f" {'CPU us/req':>11}"
        f"  {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'CPU us/req':>11}",
    ]
    for r in rows:
        cpu_many = f"{r.many.cpu_us:.0f}" if r.many.cpu_us is not None else "-"
        cpu_one = f"{r.one.cpu_us:.0f}" if r.one.cpu_us is not None else "-"
        added = "-" if r is ref else fmt_ms(r.one.p50_ms - ref.one.p50_ms)
        lines.append(
            f"{r.name:10}{r.many.rps:>9.0f} {r.spread():>7} {fmt_ms(r.many.p50_ms):>8}"
            f" {fmt_ms(r.many.p99_ms):>8}"
            f" {r.many.rps / base.many.rps:>9.2f}x {cpu_many:>11}"
            f"  {r.one.rps:>8.0f} {fmt_ms(r.one.p50_ms):>8} {fmt_ms(r.one.p99_ms):>8}"
            f" {added:>8} {cpu_one:>11}"
        )
        if r.bad:
            lines.append(f"{'':10}ERROR: {r.bad} errors or non-2xx answers: the run failed")
    return "\n".join(lines)


def verdict(label: str, value: str, ok: bool | None) -> str:
    return VERDICTS.check(label, value, ok)


def start_gateway(
    procs: Processes, name: str, data_dir: Path, port: int, server: str, static: str = ""
) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(HERE / "serve_gateway.py"), "--data-dir", str(data_dir)]
    args += ["--port", str(port), "--team", TEAM, "--server", server]
    if static:
        args += ["--static", static]
    return procs.start(name, args)


def tiny(procs: Processes, tmp: Path, args: argparse.Namespace) -> str:
    up_port, nginx_port, gw_port = free_port(), free_port(), free_port()
    upstream = start_nginx(procs, tmp, "upstream", nginx_upstream_conf(tmp, up_port, 1))
    wait_http(up_port, proc=upstream)
    proxy = start_nginx(
        procs, tmp, "proxy", nginx_proxy_conf(tmp, nginx_port, up_port, args.nginx_workers)
    )
    wait_http(nginx_port, proc=proxy)
    gateway = start_gateway(
        procs, "gateway-tiny", tmp / "gw-tiny", gw_port, args.server, f"127.0.0.1:{up_port}"
    )
    wait_http(gw_port, host=TEAM_HOST, proc=gateway)
    subjects = [
        Subject("direct", up_port, cpu_pids=group_pids(upstream.pid)),
        Subject("nginx", nginx_port, host=TEAM_HOST, cpu_pids=group_pids(proxy.pid)),
        Subject("gateway", gw_port, host=TEAM_HOST, cpu_pids=group_pids(gateway.pid)),
    ]
    minimal = None
    if args.minimal:
        min_port = free_port()
        minimal = procs.start(
            "minimal", [sys.executable, str(HERE / "minimal_proxy.py"), str(min_port), str(up_port)]
        )
        wait_http(min_port, host=TEAM_HOST, proc=minimal)
        subjects.append(
            Subject("minimal", min_port, host=TEAM_HOST, cpu_pids=group_pids(minimal.pid))
        )
    rows = measure(subjects, args.duration, args.rounds)
    procs.stop(gateway)
    if minimal is not None:
        procs.stop(minimal)
    procs.stop(proxy)
    procs.stop(upstream)
    by = {r.name: r for r in rows}
    ratio = by["gateway"].many.rps / by["nginx"].many.rps
    added = by["gateway"].one.p50_ms - by["direct"].one.p50_ms
    return "\n".join(
        [
            table(
                f"Tiny JSON upstream (nginx `return 200`, 1 worker); proxy nginx with "
                f"{args.nginx_workers} worker(s); gateway on {args.server}; "
                f"{args.duration:g} s per run, median of {args.rounds}",
                rows,
                "nginx",
                "direct",
            ),
            "targets",
            verdict(
                f"gateway req/s >= {TARGET_VS_NGINX}x nginx ({CONNECTIONS} conns)",
                f"{ratio:.2f}x",
                ratio >= TARGET_VS_NGINX,
            ),
            verdict(
                f"gateway added p50 at 1 conn <= {TARGET_ADDED_P50_MS} ms",
                f"{added:.3f} ms",
                added <= TARGET_ADDED_P50_MS,
            ),
        ]
    )


def seed_team(data_dir: Path) -> None:
    """A small table, as a journalist's first CSV upload would make."""
    db = prepare_team_dir(data_dir / "teams" / TEAM)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, city TEXT, n INT)")
        conn.executemany(
            "INSERT INTO items (name, city, n) VALUES (?, ?, ?)",
            [(f"item {i}", ["Lyon", "Oslo", "Lima", "Pune"][i % 4], i * 7) for i in range(20)],
        )
    conn.close()


def datasette_port(gw_port: int, data_dir: Path) -> int:
    """The team's Datasette port, from the control store (the status page is for operators)."""
    from gateway.store import open_store

    store = open_store(data_dir / "control.db")
    try:
        for _ in range(100):
            ports = [i.port for i in store.instances(TEAM) if i.role == "active" and i.port]
            if ports:
                return int(ports[0])
            time.sleep(0.1)
    finally:
        store.close()
    raise SystemExit(f"no running instance of {TEAM} on the gateway at port {gw_port}")


def datasette(procs: Processes, tmp: Path, args: argparse.Namespace) -> str:
    data_dir = tmp / "gw-datasette"
    seed_team(data_dir)
    gw_port = free_port()
    gateway = start_gateway(procs, "gateway-datasette", data_dir, gw_port, args.server)
    path = "/data/items"
    wait_http(gw_port, host=TEAM_HOST, path=path, timeout=120, proc=gateway)
    ds_port = datasette_port(gw_port, data_dir)
    wait_http(ds_port, path=path)
    # The gateway's process group holds the gateway and the Datasette it supervises.
    members = group_pids(gateway.pid)
    gateway_pids = [gateway.pid] if args.server == "uvicorn" else members
    ds_pids = [p for p in members if p not in gateway_pids]
    subjects = [
        Subject("direct", ds_port, path=path, cpu_pids=ds_pids),
        Subject(
            "gateway",
            gw_port,
            path=path,
            host=TEAM_HOST,
            cpu_pids=gateway_pids,
            upstream_pids=ds_pids,
        ),
    ]
    rows = measure(subjects, args.duration, args.rounds)
    procs.stop(gateway)
    by = {r.name: r for r in rows}
    ratio = by["gateway"].many.rps / by["direct"].many.rps
    added = by["gateway"].one.p50_ms - by["direct"].one.p50_ms
    return "\n".join(
        [
            table(
                f"Datasette table page {path} (20 rows, HTML); CPU us/req: Datasette for "
                f"direct, the gateway process alone for gateway",
                rows,
                "direct",
                "direct",
            ),
            "targets",
            verdict(
                f"Datasette through gateway >= {TARGET_VS_DATASETTE}x direct ({CONNECTIONS} conns)",
                f"{ratio:.2f}x",
                ratio >= TARGET_VS_DATASETTE,
            ),
            verdict(
                "gateway added p50 at 1 conn (Datasette's own p50 varies)",
                f"{added:.3f} ms",
                None,
            ),
            capacity(by["direct"].many, by["gateway"].many),
        ]
    )


def capacity(direct: WrkResult, proxied: WrkResult) -> str:
    """req/s swings with the neighbours' load; CPU per request barely does. Where Datasette
    is the bottleneck, its capacity through the gateway is its direct CPU per request over
    (its CPU per request when proxied + the gateway's), were they to share the same cores."""
    if direct.cpu_us is None or proxied.cpu_us is None or proxied.upstream_cpu_us is None:
        return ""
    ratio = direct.cpu_us / (proxied.upstream_cpu_us + proxied.cpu_us)
    return (
        f"  CPU per request ({CONNECTIONS} conns): Datasette direct {direct.cpu_us:.0f} us; "
        f"through the gateway Datasette {proxied.upstream_cpu_us:.0f} + gateway "
        f"{proxied.cpu_us:.0f} us\n"
        f"  {'capacity if they shared cores (steadier than req/s)':<46} {ratio:>9.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Gateway vs nginx vs direct, then gateway vs direct Datasette."
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="3 s per wrk run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds, each running every subject in turn; the median round is shown",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="exit 0 even when a target is missed or a run had errors (just print)",
    )
    parser.add_argument(
        "--nginx-workers",
        default="1",
        help="worker processes of the reference nginx (1 matches the one gateway process)",
    )
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument(
        "--minimal",
        action="store_true",
        help="add a row for benchmarks/minimal_proxy.py: the least any Python proxy costs",
    )
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--skip-datasette", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration = 3.0
    if args.duration <= 0 or args.duration > 600 or not 1 <= args.rounds <= 20:
        parser.error("--duration must be in (0, 600] and --rounds in [1, 20]")
    require_tools()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process group we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    started = time.monotonic()
    try:
        with Processes(tmp) as procs:
            print(f"machine: {_machine()}  (shared machines are noisy: compare ratios)\n")
            if not args.skip_tiny:
                print(tiny(procs, tmp, args), end="\n\n", flush=True)
            if not args.skip_datasette:
                print(datasette(procs, tmp, args), end="\n\n", flush=True)
    except Exception:
        print(f"benchmark failed; logs kept in {tmp}", file=sys.stderr)
        raise
    print(f"done in {time.monotonic() - started:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    if VERDICTS.missed:
        print("MISSED: " + "; ".join(VERDICTS.missed), file=sys.stderr)
        return 0 if args.report_only else 1
    return 0


def _machine() -> str:
    import os

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}"


if __name__ == "__main__":
    sys.exit(main())
