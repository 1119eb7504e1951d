"""CSV import speed: the gateway's upload endpoint against ``sqlite-utils insert --csv``.

    .venv/bin/python benchmarks/upload.py            # 1,000,000 rows x 10 mixed columns
    .venv/bin/python benchmarks/upload.py --rows 200000

One run generates the CSV, then imports the same file in ``--rounds`` (3) interleaved rounds,
each importing it with both, so both meet the same neighbours' load:

* **gateway**: a real gateway (``benchmarks/serve_gateway.py``, production uvicorn settings)
  receives the file on ``/-/upload-csv`` as a multipart upload (``auto=1``: no preview) and
  the clock stops when the job's JSON says ``done``: upload + analysis + import.
* **sqlite-utils**: ``sqlite-utils insert DB TABLE FILE --csv`` with type detection
  (``--detect-types`` on 3.x; on by default in 4.x, where the flag no longer exists).

It prints rows/s for both, their ratio, the gateway's peak RSS growth during the upload
(sampled from /proc every 20 ms, plus the kernel's VmHWM) and the worker's peak RSS.
Targets (issue 6): ratio >= 1.0 (the median round's); gateway peak RSS growth < 100 MB. It exits
1 when one is missed (``--report-only``: print only), and prints the spread across rounds.

    .venv/bin/python benchmarks/upload.py --replication 2     # issue 15

imports the same file with Litestream replication off and on, interleaved (off/on, then
on/off, ...), each into a fresh gateway, and prints the import rate of both, their ratio
(target: on is at most 10% slower), the replication lag at the end of the import (from the
job's ``done`` until the replica holds Litestream's last transaction) and the replica's size.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import TEAM, Processes, free_port
from gateway.auth.accounts import add_member, create_user
from gateway.auth.tokens import Tokens
from gateway.config import Config
from gateway.store import open_store

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BOUNDARY = "benchboundary7f3a"
CITIES = ["Paris", "Köln", "São Paulo", "New York", "Zürich", "Łódź"]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(6)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "zip", "price", "qty", "name", "city", "day", "ratio", "flag", "note"])
        for i in range(rows):
            w.writerow([
                i, f"{rng.randint(0, 99999):05d}", f"{rng.randint(0, 99999) / 100:.2f}",
                rng.randint(-500, 500), f"name {i}", rng.choice(CITIES),
                f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", rng.random(),
                rng.choice(("true", "false")), rng.choice(("", "quoted, text", "plain")),
            ])  # fmt: skip


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Peak RSS of the gateway and of any upload worker it starts, every 20 ms."""

    def __init__(self, gateway_pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = gateway_pid
        self.peak = self.worker_peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_kb(self.pid))
            for child in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split():
                try:
                    cmd = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"gateway.upload.worker" in cmd:
                        self.worker_peak = max(self.worker_peak, rss_kb(int(child)))
                except OSError:
                    pass


def request(
    port: int,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    hdrs = {"host": f"{TEAM}.localhost:{port}", "authorization": f"Bearer {token}"}
    hdrs |= {"accept": "application/json"} | (headers or {})
    conn.request(method, path, body=body, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


PROBE = "/-/versions.json"  # a small Datasette page, proxied by the gateway


def probe(port: int, token: str, n: int) -> list[float]:
    """Latencies (ms) of ``n`` proxied requests: is the gateway still proxying at speed?"""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = request(port, "GET", PROBE, token)
        out.append((time.perf_counter() - t) * 1000)
        if status != 200:
            raise SystemExit(f"proxied probe failed: {status}")
    return out


def upload(
    port: int, token: str, path: Path, during: list[float], table: str = "bench"
) -> tuple[float, dict]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="auto"\r\n\r\n1\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="table"\r\n\r\n{table}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    size = len(head) + path.stat().st_size + len(tail)

    def body() -> Iterator[bytes]:  # the client never holds the whole file in memory
        yield head
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield tail

    start = time.perf_counter()
    status, data = request(port, "POST", "/-/upload-csv", token, body(), {
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "content-length": str(size),
    })  # fmt: skip
    if status != 202:
        raise SystemExit(f"upload failed: {status} {data[:500]!r}")
    uploaded = time.perf_counter() - start
    job_path = "/-/upload-csv/jobs/" + json.loads(data)["jobs"][0]["id"] + ".json"
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        status, data = request(port, "GET", job_path, token)
        job = json.loads(data)
        if job["state"] in ("done", "failed"):
            job["elapsed"] = time.perf_counter() - start
            job["uploaded"] = uploaded
            return job["elapsed"], job
        during += probe(port, token, 5)
        time.sleep(0.05)
    raise SystemExit("the import did not finish in 30 minutes")


def sqlite_utils(path: Path, db: Path) -> float:
    exe = str(BIN / "sqlite-utils")
    help_text = subprocess.run([exe, "insert", "--help"], capture_output=True, text=True).stdout
    flags = ["--detect-types"] if "--detect-types" in help_text else []
    start = time.perf_counter()
    subprocess.run([exe, "insert", str(db), "bench", str(path), "--csv", *flags], check=True)
    return time.perf_counter() - start


def column_types(db: Path, table: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info([{table}])")}


def start_team_gateway(
    ps: Processes, root: Path, name: str, replica: str
) -> tuple[subprocess.Popen[bytes], int, str]:
    """A fresh data dir with the bench team and a token; a gateway serving it."""
    data_dir = root / name
    store = open_store(data_dir / "control.db")
    store.create_team(TEAM)
    user = create_user(store, "bench@example.org", "unused")
    add_member(store, TEAM, user.id)
    token = Tokens(store).create(TEAM, user.id, "benchmark")
    store.close()
    port = free_port()
    env = {**os.environ, "GATEWAY_BACKUP_REPLICA": replica}
    gw = ps.start(name, [sys.executable, str(HERE / "serve_gateway.py"),
                         "--data-dir", str(data_dir), "--port", str(port), "--team", TEAM],
                  env=env)  # fmt: skip
    for _ in range(600):
        try:
            if request(port, "GET", "/-/upload-csv", token)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        raise SystemExit(f"gateway {name} did not start:\n" + ps.log_tail(name))
    time.sleep(1.0)
    return gw, port, token


def ltx_max(replica: Path) -> int:
    """The newest transaction in a team's file replica (level 0), or 0. A team's replicas are
    one per team lifetime, ``teams/<slug>/<lifetime>/``: the one the benchmark's team has."""
    names = [p.name for p in replica.glob("*/ltx/0/*.ltx")]
    return max((int(n.split("-")[1].split(".")[0], 16) for n in names), default=0)


def sync_status(socket_path: Path, db: Path) -> dict[str, Any]:
    """Litestream's own view of the database: its position (txid) and how far into the WAL
    it has read (``last_synced_wal_offset``), from its control socket."""
    import socket as sock

    with sock.socket(sock.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(socket_path))
        s.sendall(f"GET /debug/sync-status?path={db} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    data: dict[str, Any] = json.loads(raw.split(b"\r\n\r\n", 1)[1])["databases"][0]
    return data


def committed_wal_end(wal: Path) -> tuple[int, bytes]:
    """Where the WAL's last committed frame ends, and the WAL's salts. The file itself can be
    longer: after a checkpoint SQLite rewrites it from the start without truncating it."""
    import struct

    with open(wal, "rb") as f:
        header = f.read(32)
        if len(header) < 32:
            return 0, b""
        page_size = struct.unpack(">I", header[8:12])[0]
        salts = header[16:24]
        end = offset = 32
        while True:
            frame = f.read(24)
            if len(frame) < 24 or frame[8:16] != salts:
                return end, salts
            offset += 24 + page_size
            f.seek(offset)
            if struct.unpack(">I", frame[4:8])[0]:  # a commit frame
                end = offset


def replication_lag(data_dir: Path, replica: Path, done_at: float, timeout: float = 900) -> float:
    """Seconds from the import's end until the replica holds all of it: Litestream has read
    the WAL up to its last commit (or the WAL started over, which it allows only after) and
    uploaded its newest transaction."""
    from gateway.backup.layout import Layout

    socket_path = Layout(Config(data_dir=data_dir)).socket
    db = data_dir / "teams" / TEAM / "data.db"
    wal = Path(str(db) + "-wal")
    end, salts = committed_wal_end(wal)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sync_status(socket_path, db)
        with open(wal, "rb") as f:
            restarted = f.read(24)[16:24] != salts
        read_all = restarted or int(status.get("last_synced_wal_offset") or 0) >= end
        if read_all and ltx_max(replica) >= int(status.get("txid") or 0):
            return time.perf_counter() - done_at
        time.sleep(0.1)
    raise SystemExit("the replica did not catch up within 15 minutes")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def replication_main(rows: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp, Processes(Path(tmp)) as ps:
        root = Path(tmp)
        data = root / "rows.csv"
        generate(data, rows)
        print(f"generated {rows:,} rows, {data.stat().st_size / 1e6:.0f} MB; "
              f"{rounds} round(s) of replication off/on, interleaved")  # fmt: skip
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                name = f"r{r}-{mode}"
                replica = root / f"backups-{r}"
                gw, port, token = start_team_gateway(
                    ps, root, name, "off" if mode == "off" else str(replica)
                )
                secs, job = upload(port, token, data, [])
                done_at = time.perf_counter()
                if job["state"] != "done":
                    raise SystemExit(f"import failed: {job['error']}")
                rates[mode].append(rows / secs)
                result = job["result"]
                importing = result["import_finished"] - result["import_started"]
                line = (f"round {r} replication {mode:<3}: {secs:6.1f}s {rows / secs:10,.0f} rows/s"
                        f" (import transaction {importing:5.1f}s)")  # fmt: skip
                if mode == "on":
                    lag = replication_lag(root / name, replica / "teams" / TEAM, done_at)
                    db = du(root / name / "teams" / TEAM) / 1e6  # data.db and its WAL
                    line += (f"   lag at the end {lag:4.1f}s; replica {du(replica) / 1e6:.0f} MB"
                             f" for a {db:.0f} MB database")  # fmt: skip
                print(line, flush=True)
                ps.stop(gw)
        off, on = (sum(v) / len(v) for v in (rates["off"], rates["on"]))
        print(f"mean rows/s: off {off:,.0f}, on {on:,.0f}; on/off {on / off:.2f}x "
              f"(target >= 0.90)")  # fmt: skip
        # Each round's pair met the same neighbours' load: its ratio is the fair comparison,
        # and their spread says how far one figure can be trusted on this machine.
        ratios = sorted(a / b for a, b in zip(rates["on"], rates["off"], strict=True))
        print(f"per-round on/off: {', '.join(f'{x:.2f}' for x in ratios)}; median "
              f"{statistics.median(ratios):.2f}, spread {ratios[0]:.2f}-{ratios[-1]:.2f}; "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both")
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 even when a target is missed"
    )
    parser.add_argument(
        "--replication", type=int, metavar="ROUNDS", default=0, help="off vs on (issue 15)"
    )
    args = parser.parse_args()
    if args.replication:
        replication_main(args.rows, args.replication)
        return 0
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp, Processes(Path(tmp)) as ps:
        root = Path(tmp)
        data = root / "rows.csv"
        t = time.perf_counter()
        generate(data, args.rows)
        print(f"generated {args.rows:,} rows, {data.stat().st_size / 1e6:.0f} MB "
              f"in {time.perf_counter() - t:.1f}s")  # fmt: skip

        store = open_store(root / "data" / "control.db")
        store.create_team(TEAM)
        user = create_user(store, "bench@example.org", "unused")
        add_member(store, TEAM, user.id)
        token = Tokens(store).create(TEAM, user.id, "benchmark")
        store.close()
        port = free_port()
        gw = ps.start("gateway", [sys.executable, str(HERE / "serve_gateway.py"),
                                  "--data-dir", str(root / "data"), "--port", str(port),
                                  "--team", TEAM])  # fmt: skip
        for _ in range(600):
            try:
                if request(port, "GET", "/-/upload-csv", token)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("gateway did not start:\n" + ps.log_tail("gateway"))
        time.sleep(1.0)  # let start-up allocations settle before the baseline
        idle = probe(port, token, 200)
        base = rss_kb(gw.pid)
        sampler = Sampler(gw.pid)
        sampler.start()
        during: list[float] = []
        su_runs: list[float] = []
        gw_runs: list[float] = []
        jobs: list[dict[str, Any]] = []
        # Interleaved: each round imports the same file with sqlite-utils, then the gateway,
        # so both meet the same neighbours' load.
        for n in range(args.rounds):
            su_runs.append(sqlite_utils(data, root / f"sqlite-utils-{n}.db"))
            gw_secs, job = upload(port, token, data, during, table=f"bench{n}")
            if job["state"] != "done":
                raise SystemExit(f"the gateway import failed: {job['error']}")
            gw_runs.append(gw_secs)
            jobs.append(job)
        sampler.stop.set()
        sampler.join()
        hwm = rss_kb(gw.pid, "VmHWM")

        ours = column_types(root / "data" / "teams" / TEAM / "data.db", "bench0")
        theirs = column_types(root / "sqlite-utils-0.db", "bench")
        ratios = sorted(su / gw for su, gw in zip(su_runs, gw_runs, strict=True))
        ratio = ratios[(len(ratios) - 1) // 2]
        print(f"\n{'':14}{'median s':>9}{'rows/s':>11}{'spread':>8}")
        for name, runs in (("sqlite-utils", su_runs), ("gateway", gw_runs)):
            mid = sorted(runs)[(len(runs) - 1) // 2]
            spread = (max(runs) - min(runs)) / mid * 100
            print(f"{name:14}{mid:9.1f}{args.rows / mid:11,.0f}{spread:7.0f}%")
        job = jobs[gw_runs.index(sorted(gw_runs)[(len(gw_runs) - 1) // 2])]
        result = job["result"]
        importing = result["import_finished"] - result["import_started"]
        analysing = job["elapsed"] - job["uploaded"] - importing
        print(f"gateway's median run: upload {job['uploaded']:.1f}s, "
              f"analysis + start-up {analysing:.1f}s, import {importing:.1f}s")  # fmt: skip
        print(f"ratio gateway/sqlite-utils (median of {args.rounds} rounds): {ratio:.2f}x "
              f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.0)")  # fmt: skip
        growth = (sampler.peak - base) / 1024
        print(f"gateway RSS: baseline {base / 1024:.0f} MB, peak {sampler.peak / 1024:.0f} MB, "
              f"growth {growth:.1f} MB (target < 100); VmHWM {hwm / 1024:.0f} MB; "
              f"worker peak RSS {sampler.worker_peak / 1024:.0f} MB")  # fmt: skip
        for name, values in (("idle", idle), ("during import", during)):
            values.sort()
            p50, p90 = values[len(values) // 2], values[len(values) * 9 // 10]
            print(f"proxied {PROBE} {name}: p50 {p50:.2f} ms, p90 {p90:.2f} ms "
                  f"({len(values)} requests)")  # fmt: skip
        print(f"p50 during import / idle: {during[len(during) // 2] / idle[len(idle) // 2]:.2f}x")
        differ = {c: (ours[c], theirs.get(c)) for c in ours if ours[c] != theirs.get(c)}
        print(f"column types (gateway, sqlite-utils) where they differ: {differ}")
    missed = [
        m
        for m, bad in (("ratio >= 1.0", ratio < 1.0), ("RSS growth < 100 MB", growth >= 100))
        if bad
    ]
    if missed:
        print("MISSED: " + "; ".join(missed), file=sys.stderr)
        return 0 if args.report_only else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
