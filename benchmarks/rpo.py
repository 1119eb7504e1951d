"""RPO: how many seconds of committed writes a sudden loss of the disk loses (issue 15).

    .venv/bin/python benchmarks/rpo.py                   # 10 trials each way, 24 writes/s
    .venv/bin/python benchmarks/rpo.py --rate 24 --trials 10 --sync-interval 0.5

Each trial replicates a team database with the gateway's own Litestream config
(``gateway.backup.litestream.config_text``) to a file replica, commits timestamped rows at
the load scenario's write rate (tests/load: 120 req/s, a fifth of them POSTs = 24 writes/s),
and at a random moment "loses the disk": Litestream is killed with SIGKILL (nothing it had not
uploaded yet gets out) and the writer stops. The replica is then restored, and the loss is
the time between the moment of the loss and the newest commit the restore holds (0 when it
holds every commit). Rows go straight into SQLite, as Datasette's canned-query writes do: the
RPO depends on Litestream's monitor and sync intervals, not on the HTTP path.

Both ways a team's database reaches the daemon are measured, interleaved: "config" (in the
config file the daemon starts with: a team that existed at gateway start) and "runtime"
(registered through the control socket, as a team created or restored later, with the
gateway's Nudger syncing it every sync interval, as the supervisor does).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.backup.layout import Layout
from gateway.backup.litestream import Control, Nudger, binary, config_text, restore
from gateway.config import Config
from gateway.runtimes.base import prepare_team_dir


def trial(
    root: Path,
    rate: float,
    sync_interval: float,
    rng: random.Random,
    runtime: bool,
    nudge_on: bool = True,
) -> tuple[float, int]:
    config = Config(data_dir=root / "data", backup_sync_interval=sync_interval)
    layout = Layout(config)
    db = layout.team("rpo", time.time())
    prepare_team_dir(db.path.parent)
    conn = sqlite3.connect(db.path, check_same_thread=False)  # the writer thread uses it
    conn.execute("create table t (id integer primary key, at real)")
    conn.commit()
    layout.state_dir.mkdir(parents=True)
    layout.config_file.write_text(config_text(layout, [] if runtime else [db]))
    log = open(layout.log_file, "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [binary(), "replicate", "-config", str(layout.config_file)], stdout=log, stderr=log
    )
    control = Control(layout.socket)
    deadline = time.monotonic() + 30
    while not control.alive():
        if time.monotonic() > deadline:
            raise SystemExit("litestream did not start")
        time.sleep(0.05)
    committed: list[float] = []
    stop = threading.Event()
    nudger = threading.Thread()
    if runtime:
        control.register(db)

        def nudge() -> None:  # the supervisor's loop (Replication._nudge)
            n = Nudger(control)
            while not stop.wait(sync_interval):
                n.nudge([db.path])

        nudger = threading.Thread(target=nudge if nudge_on else (lambda: None))
        nudger.start()

    def writer() -> None:
        start = time.monotonic()
        for i in range(100_000):  # bounded; stopped at the loss
            if stop.is_set():
                return
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            conn.execute("insert into t (at) values (?)", [at])
            conn.commit()
            committed.append(at)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(3 + rng.random() * 3)
    lost_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)  # the disk is gone: nothing more leaves the machine
    stop.set()
    thread.join()
    if runtime:
        nudger.join()
    proc.wait()
    log.close()
    conn.close()
    out = root / "restored.db"
    restore(db.replica, out, None)
    got = sqlite3.connect(out)
    newest = got.execute("select max(at), count(*) from t").fetchone()
    got.close()
    before = [c for c in committed if c <= lost_at]
    if len(before) < rate:  # the writer must have run: a silent failure would read as RPO 0
        raise SystemExit(f"the writer committed only {len(before)} rows")
    lost_rows = len(before) - int(newest[1])
    if lost_rows <= 0:
        return 0.0, 0
    return lost_at - float(newest[0] or 0.0), lost_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=24.0, help="writes per second")
    parser.add_argument("--trials", type=int, default=10, help="per way of registering")
    parser.add_argument("--sync-interval", type=float, default=Config().backup_sync_interval)
    parser.add_argument("--only", choices=["config", "runtime"], help="one way only")
    parser.add_argument(
        "--no-nudge", action="store_true", help="runtime without the Nudger (Litestream alone)"
    )
    args = parser.parse_args()
    rng = random.Random(15)
    ways = [args.only] if args.only else ["config", "runtime"]
    losses: dict[str, list[float]] = {way: [] for way in ways}
    for n in range(args.trials):
        for way in ways:  # interleaved: both see the same machine load
            with tempfile.TemporaryDirectory(prefix="rpo-bench-") as tmp:
                seconds, rows = trial(
                    Path(tmp),
                    args.rate,
                    args.sync_interval,
                    rng,
                    way == "runtime",
                    not args.no_nudge,
                )
            losses[way].append(seconds)
            print(
                f"trial {n} {way:<7}: lost {rows:3d} committed row(s) = {seconds:.2f} s of writes",
                flush=True,
            )
    for way, got in losses.items():
        got.sort()
        print(
            f"RPO ({way}) at {args.rate:.0f} writes/s, sync interval {args.sync_interval:g} s: "
            f"median {statistics.median(got):.2f} s, worst {got[-1]:.2f} s "
            f"over {len(got)} trials (target <= 1 s)"
        )


if __name__ == "__main__":
    main()
