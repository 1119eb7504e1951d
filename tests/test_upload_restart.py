"""An import running when its gateway dies for real (SIGKILL of a `gateway serve` process): the
worker dies with it (PR_SET_PDEATHSIG), and the next gateway on the same data fails the job and
leaves no half table; or, during a `gateway restart`, the successor's sweep does, once the
predecessor's worker dies. A gateway killed after the rows were published but before the job's
record said so: the next gateway ends the job `done` from the team database's publication
marker. (tests/test_upload_jobs.py covers a killed worker under a live gateway.)"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.upload.jobs import IMPORTS_TABLE
from tests.systemd_gateway import SystemdGateway, alive, prepare_team
from tests.upload_support import hold_after_publication, staging_tables, two_batches

pytestmark = pytest.mark.slow


def until(condition: Callable[[], object], timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.01)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[[], SystemdGateway]]:
    """``gateway serve`` processes on one data dir (tmp_path/data), each stopped after the test
    with any successor it handed over to (one killed with -9 is only reaped)."""
    made: list[SystemdGateway] = []

    def new() -> SystemdGateway:
        made.append(SystemdGateway(tmp_path / "data"))
        return made[-1]

    yield new
    for gw in reversed(made):
        gw.stop()


def team_client(gw: SystemdGateway, token: str) -> httpx.Client:
    """A client of alpha through ``gw``, signed in with ``token``."""
    headers = {
        "host": f"alpha.localhost:{gw.port}",
        "authorization": f"Bearer {token}",
        "accept": "application/json",
    }
    return httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", headers=headers, timeout=60)


def serves_alpha(gw: SystemdGateway, token: str) -> bool:
    try:
        with team_client(gw, token) as c:
            return c.get("/data.json").status_code == 200
    except httpx.HTTPError:
        return False


def big_csv(rows: int) -> bytes:
    lines = [b"id,code,amount,label"]
    lines += [b"%d,%05d,%d.25,row %d" % (i, i % 1000, i, i) for i in range(rows)]
    return b"\n".join(lines) + b"\n"


def start_import(gw: SystemdGateway, token: str, data_dir: Path) -> tuple[str, int]:
    """A big import under way (its first batch in the staging table): (job id, worker pid)."""
    with team_client(gw, token) as c:
        r = c.post(
            "/-/upload-csv",
            data={"auto": "1", "table": "half"},
            files={"file": ("big.csv", big_csv(300_000), "text/csv")},
        )
    assert r.status_code == 202, r.text
    job_id = str(r.json()["jobs"][0]["id"])
    until(
        lambda: (
            (row := job_row(data_dir, job_id))["state"] == "importing"
            and row["rows_done"] > 0
            and row["pid"]
        ),
        what="the import is under way",
    )
    return job_id, int(job_row(data_dir, job_id)["pid"])


@contextlib.contextmanager
def team_db(data_dir: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(data_dir / "teams" / "alpha" / "data.db", timeout=10)
    try:
        with db:  # committed on leaving
            yield db
    finally:
        db.close()


def no_half_table(data_dir: Path) -> None:
    db = sqlite3.connect(data_dir / "teams" / "alpha" / "data.db")
    try:
        assert staging_tables(db) == []
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
        assert "half" not in tables, tables
        if IMPORTS_TABLE in tables:  # no import of this test was published
            assert db.execute(f"SELECT count(*) FROM {IMPORTS_TABLE}").fetchone()[0] == 0
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


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
    tmp_path: Path, gateways: Callable[[], SystemdGateway]
) -> None:
    data_dir = tmp_path / "data"
    token = prepare_team(data_dir, "alpha")
    first, second = gateways(), gateways()
    first.start()
    until(lambda: serves_alpha(first, token), what="the first gateway serves alpha")
    job_id, worker = start_import(first, token, data_dir)
    with team_db(data_dir) as db:
        # Its rows are in an open transaction: invisible to readers such as Datasette.
        assert staging_tables(db) == []
    os.kill(first.pid, signal.SIGKILL)
    assert first.proc is not None and first.proc.wait(30) == -signal.SIGKILL
    until(lambda: not alive(worker), timeout=30, what="the worker dies with its gateway")
    with team_db(data_dir) as db:
        # What a crash between the filling commit and the publishing rename leaves: a
        # committed staging table, which the next gateway must drop too.
        db.execute(f"CREATE TABLE _gateway_staging_{job_id} (x)")
        db.execute(f"INSERT INTO _gateway_staging_{job_id} VALUES (1)")

    second.start()
    until(lambda: serves_alpha(second, token), what="the next gateway serves alpha")
    with team_client(second, token) as c:
        job = c.get(f"/-/upload-csv/jobs/{job_id}.json").json()
    assert job["state"] == "failed" and "restart" in job["error"], job
    no_half_table(data_dir)


@pytest.mark.timeout(300)
def test_the_successor_sweeps_a_job_whose_predecessor_died_mid_restart(
    tmp_path: Path, gateways: Callable[[], SystemdGateway]
) -> None:
    """`gateway restart` while an import runs: the successor leaves the live worker alone at
    start; when the predecessor then dies unrecorded (SIGKILL) its worker dies with it, and the
    successor's sweep (every 5 s) fails the job and drops its staging table."""
    data_dir = tmp_path / "data"
    token = prepare_team(data_dir, "alpha")
    gw = gateways()
    gw.start()
    until(lambda: serves_alpha(gw, token), what="the gateway serves alpha")
    job_id, worker = start_import(gw, token, data_dir)
    os.kill(worker, signal.SIGSTOP)  # held mid-import: it cannot finish before the checks
    os.kill(gw.pid, signal.SIGHUP)  # `gateway restart`
    # Its pid is logged once it exists (the line before it is logged before the fork).
    until(lambda: re.search(r"restart: successor pid \d+ started", gw.log()), what="a successor")
    os.kill(gw.pid, signal.SIGSTOP)  # the predecessor stops acting (and accepting) here
    try:
        until(
            lambda: (
                (pid := gw.published_pid()) is not None
                and pid != gw.pid
                and serves_alpha(gw, token)
            ),
            what="the successor serves (only it can answer now)",
        )
        assert job_row(data_dir, job_id)["state"] == "importing"  # left alone at start
        assert alive(worker)
    finally:
        os.kill(gw.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)  # its parent-death SIGTERM is delivered now
    assert gw.proc is not None and gw.proc.wait(30) == -signal.SIGKILL
    until(lambda: not alive(worker), timeout=30, what="the worker dies with its gateway")
    until(
        lambda: job_row(data_dir, job_id)["state"] == "failed",
        timeout=60,
        what="the successor's sweep fails the job",
    )
    assert "stopped" in str(job_row(data_dir, job_id)["error"])
    no_half_table(data_dir)


@pytest.mark.timeout(300)
def test_a_gateway_killed_after_the_publication_ends_the_job_done_at_the_next_start(
    tmp_path: Path, gateways: Callable[[], SystemdGateway]
) -> None:
    """The worker is held for real between its publication and its record of the end (the
    control store's write lock, taken by this test: tests/upload_support.py); the gateway is
    SIGKILLed there, its worker dies with it, and the record still says `importing`. The next
    gateway reads the team database: the rows are there, so the job is `done` with its count."""
    data_dir = tmp_path / "data"
    token = prepare_team(data_dir, "alpha")
    team_db = data_dir / "teams" / "alpha" / "data.db"
    first, second = gateways(), gateways()
    csv = two_batches()
    rows = csv.count(b"\n") - 1

    held: sqlite3.Connection | None = None
    try:
        first.start()
        until(lambda: serves_alpha(first, token), what="the first gateway serves alpha")
        for attempt in range(4):  # the hold races the worker's first report: see its docstring
            table = f"kept{attempt}"
            with team_client(first, token) as c:
                r = c.post("/-/upload-csv", data={"auto": "1", "table": table},
                           files={"file": ("kept.csv", csv, "text/csv")})  # fmt: skip
            assert r.status_code == 202, r.text
            job_id = str(r.json()["jobs"][0]["id"])
            held = hold_after_publication(data_dir / "control.db", team_db, job_id, table)
            if held is not None:
                break
        assert held is not None, "the worker was never held after its publication"
        worker = int(job_row(data_dir, job_id)["pid"])
        os.kill(first.pid, signal.SIGKILL)
        assert first.proc is not None and first.proc.wait(30) == -signal.SIGKILL
        until(lambda: not alive(worker), timeout=30, what="the worker dies with its gateway")
        held.execute("ROLLBACK")
    finally:
        if held is not None:
            held.close()
    assert job_row(data_dir, job_id)["state"] == "importing"  # the record never said done

    second.start()
    until(lambda: serves_alpha(second, token), what="the next gateway serves alpha")
    with team_client(second, token) as c:
        job = c.get(f"/-/upload-csv/jobs/{job_id}.json").json()
    assert job["state"] == "done" and job["error"] is None, job
    assert job["rows_done"] == rows and job["result"]["rows"] == rows, job
    assert job["result"]["table"] == table and job["progress"] == 1.0, job
    db = sqlite3.connect(team_db)
    try:
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows
        assert staging_tables(db) == []
    finally:
        db.close()
    assert list((data_dir / "teams" / "alpha" / ".spool").glob("*.upload")) == []
