"""One import-shaped transaction with Litestream replicating the file or not (issue 15).

    .venv/bin/python benchmarks/import_txn.py [--rows 1500000] [--rounds 2]

The gateway's importer fills a table in ONE transaction with a 64 MiB page cache
(gateway/upload/importer.py). This times exactly that, straight in SQLite (no HTTP, no CSV
parsing, so the neighbours' noise matters less than in benchmarks/upload.py), with the
gateway's own Litestream config (``gateway.backup.litestream.config_text``) replicating the
file to a file replica, or no Litestream; off/on interleaved. It prints the transaction's
time for each and the CPU seconds Litestream used during it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.backup.layout import Layout
from gateway.backup.litestream import Control, binary, config_text
from gateway.config import Config
from gateway.runtimes.base import prepare_team_dir


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(root: Path, rows: int, replicate: bool) -> tuple[float, float]:
    shutil.rmtree(root, ignore_errors=True)
    layout = Layout(Config(data_dir=root / "data"))
    db = layout.team("bench")
    prepare_team_dir(db.path.parent)
    proc = None
    if replicate:
        layout.state_dir.mkdir(parents=True)
        layout.config_file.write_text(config_text(layout, [db]))
        proc = subprocess.Popen(
            [binary(), "replicate", "-config", str(layout.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        control = Control(layout.socket)
        while not control.alive():
            time.sleep(0.05)
        time.sleep(2)  # its first snapshot is done
    conn = sqlite3.connect(db.path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")  # as the importer
    batch = [(i, f"name {i}", i * 1.5, "some text here") for i in range(1000)]
    used = cpu_seconds(proc.pid) if proc else 0.0
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d TEXT)")
    for _ in range(rows // len(batch)):
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", batch)
    conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    used = (cpu_seconds(proc.pid) - used) if proc else 0.0
    conn.close()
    if proc:
        proc.terminate()
        proc.wait()
    return seconds, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="import-txn-") as tmp:
        for r in range(args.rounds):
            for replicate in (False, True) if r % 2 == 0 else (True, False):
                seconds, used = one(Path(tmp) / "run", args.rows, replicate)
                times[replicate].append(seconds)
                print(f"round {r} litestream {'on ' if replicate else 'off'}: "
                      f"{seconds:5.2f}s (litestream CPU during it {used:.2f}s)")  # fmt: skip
    off, on = (sum(v) / len(v) for v in (times[False], times[True]))
    print(f"mean: off {off:.2f}s, on {on:.2f}s; on/off rate {off / on:.2f}x (target >= 0.90)")


if __name__ == "__main__":
    main()
