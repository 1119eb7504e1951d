"""An import running when its gateway dies for real (SIGKILL of a `gateway serve` process): the
worker dies with it (PR_SET_PDEATHSIG), and the next gateway on the same data fails the job and
leaves no half table. (tests/test_upload_jobs.py covers a killed worker under a live gateway.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.systemd_gateway import SystemdGateway, alive, prepare_team
from tests.upload_support import staging_tables

pytestmark = pytest.mark.slow


def until(condition: Callable[[], object], timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.01)


def big_csv(rows: int) -> bytes:
    lines = [b"id,code,amount,label"]
    lines += [b"%d,%05d,%d.25,row %d" % (i, i % 1000, i, i) for i in range(rows)]
    return b"\n".join(lines) + b"\n"


def job_row(data_dir: Path, job_id: str) -> sqlite3.Row:
    db = sqlite3.connect(f"file:{data_dir / 'control.db'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        row: sqlite3.Row = db.execute("SELECT * FROM import_jobs WHERE id = ?", [job_id]).fetchone()
        return row
    finally:
        db.close()


@pytest.mark.timeout(300)
def test_a_killed_gateway_takes_its_worker_along_and_the_next_one_cleans_up(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    token = prepare_team(data_dir, "alpha")
    first = SystemdGateway(data_dir)
    second = SystemdGateway(data_dir)

    def client(gw: SystemdGateway) -> httpx.Client:
        headers = {
            "host": f"alpha.localhost:{gw.port}",
            "authorization": f"Bearer {token}",
            "accept": "application/json",
        }
        return httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", headers=headers, timeout=60)

    def answers(gw: SystemdGateway) -> bool:
        try:
            with client(gw) as c:
                return c.get("/data.json").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        first.start()
        until(lambda: answers(first), what="the first gateway serves alpha")
        with client(first) as c:
            r = c.post(
                "/-/upload-csv",
                data={"auto": "1", "table": "half"},
                files={"file": ("big.csv", big_csv(300_000), "text/csv")},
            )
        assert r.status_code == 202, r.text
        job_id = r.json()["jobs"][0]["id"]
        # The first batch is in the staging table, inside the worker's open transaction.
        until(
            lambda: (
                (row := job_row(data_dir, job_id))["state"] == "importing"
                and row["rows_done"] > 0
                and row["pid"]
            ),
            what="the import is under way",
        )
        worker = int(job_row(data_dir, job_id)["pid"])
        os.kill(first.pid, signal.SIGKILL)
        assert first.proc is not None and first.proc.wait(30) == -signal.SIGKILL
        until(lambda: not alive(worker), timeout=30, what="the worker dies with its gateway")

        second.start()
        until(lambda: answers(second), what="the next gateway serves alpha")
        with client(second) as c:
            job = c.get(f"/-/upload-csv/jobs/{job_id}.json").json()
        assert job["state"] == "failed" and "restart" in job["error"], job
        db = sqlite3.connect(data_dir / "teams" / "alpha" / "data.db")
        try:
            assert staging_tables(db) == []
            assert (
                db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0]
                == 0
            )
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
    finally:
        second.stop()
        if first.proc is not None and first.proc.poll() is None:
            first.stop()
