"""Size cap, modes, atomicity, serialisation, killed workers and restarts, on a real gateway."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from gateway.config import Config
from tests.upload_support import Member, sign_in, staging_tables

BOUNDARY = "testboundary1234"


def spool_files(member: Member) -> list[str]:
    spool = member.running.config.teams_dir / member.team / ".spool"
    if not spool.exists():
        return []
    return [p for p in os.listdir(spool) if p.endswith((".upload", ".part"))]


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return [r[0] for r in rows if not r[0].startswith("_litestream_")]  # backups' bookkeeping


def multipart_head(filename: str = "big.csv") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'
    ).encode()


def big_csv(rows: int) -> bytes:
    lines = [b"id,code,amount,label"]
    lines += [b"%d,%05d,%d.25,row %d" % (i, i % 1000, i, i) for i in range(rows)]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
async def member(start_gateway, config: Config) -> Member:
    running = await start_gateway(config.replace(upload_max_bytes=1_000_000), teams=("alpha",))
    return await sign_in(running)


async def test_size_cap_by_content_length(member: Member):
    r = await member.post(b"a\n" + b"1\n" * 600_000)
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    assert spool_files(member) == []


async def test_size_cap_while_streaming_removes_the_spool_at_once(member: Member):
    removed = asyncio.Event()

    async def body():
        yield multipart_head()
        yield b"a\n" + b"1\n" * 300_000  # 600 kB: under the cap, spooled to disk
        for _ in range(300):  # wait (bounded) until the server has the partial spool file
            if spool_files(member):
                break
            await asyncio.sleep(0.02)
        assert spool_files(member), "the first chunks were not spooled"
        yield b"1\n" * 300_000  # crosses the 1 MB cap
        for _ in range(500):  # the spool file goes before the client finishes sending
            if not spool_files(member):
                removed.set()
                break
            await asyncio.sleep(0.02)
        yield b"1\n" * 1000 + f"\r\n--{BOUNDARY}--\r\n".encode()

    async with member.client() as c:
        r = await c.post(
            member.url("/-/upload-csv"),
            content=body(),
            headers={
                "content-type": f"multipart/form-data; boundary={BOUNDARY}",
                "accept": "application/json",
            },
        )
    assert r.status_code == 413
    assert removed.is_set()
    assert spool_files(member) == []
    assert member.running.app.upload.jobs.for_team("alpha") == []


async def test_too_many_parts_and_no_file(member: Member):
    parts = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
        for i in range(40)
    )
    async with member.client() as c:
        r = await c.post(
            member.url("/-/upload-csv"),
            content=parts + f"--{BOUNDARY}--\r\n".encode(),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert r.status_code == 400 and "Too many parts" in r.text
        r = await c.post(member.url("/-/upload-csv"), data={"table": "x"})
        assert r.status_code == 400 and "multipart" in r.text
        r = await c.post(
            member.url("/-/upload-csv"),
            content=multipart_head() + b"a,b\n1,2\n",  # no closing boundary: truncated
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert r.status_code == 400 and "incomplete" in r.text
    assert spool_files(member) == []


async def test_new_replace_and_append(member: Member):
    first = await member.upload(b"id,name\n1,a\n2,b\n", table="people")
    second = await member.upload(b"id,name\n3,c\n", table="people")
    assert (first["result"]["table"], second["result"]["table"]) == ("people", "people_2")
    replaced = await member.upload(b"id,name\n9,z\n", table="people", mode="replace")
    assert replaced["state"] == "done"
    assert await member.rows(replaced["result"]["table_url"]) == [
        {"rowid": 1, "id": 9, "name": "z"}
    ]
    appended = await member.upload(b"name,id\ny,8\n", table="people", mode="append")
    assert appended["state"] == "done", appended
    rows = await member.rows(appended["result"]["table_url"])
    assert [(r["id"], r["name"]) for r in rows] == [(9, "z"), (8, "y")]
    # Appending refuses what would change or lose data, and adds nothing.
    job = await member.upload(b"id,extra\n1,x\n", table="people", mode="append")
    assert job["state"] == "failed" and "no column 'extra'" in job["error"]
    job = await member.upload(b"id,name\n007,q\n", table="people", mode="append")
    assert job["state"] == "failed" and "INTEGER" in job["error"]
    job = await member.upload(b"id\n1\n", table="nothing", mode="append")
    assert job["state"] == "failed" and "no table" in job["error"]
    assert len(await member.rows(appended["result"]["table_url"])) == 2
    with member.db() as conn:
        assert staging_tables(conn) == []


async def test_primary_key_clash_leaves_nothing(member: Member):
    job = await member.upload(b"id,v\n1,a\n1,b\n", table="t", pk="id")
    assert job["state"] == "failed" and "repeated values" in job["error"]
    job = await member.upload(b"id,v\n1,a\n,b\n", table="t", pk="id")
    assert job["state"] == "failed" and "empty cells" in job["error"]
    with member.db() as conn:
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0] == 0
        )
        assert staging_tables(conn) == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_ragged_rows_are_kept_and_reported(member: Member):
    job = await member.upload(b"a,b\n1,2\n3\n4,5,6,7\n8,9\n", table="ragged")
    assert job["state"] == "done", job
    assert job["result"]["ragged"] == {"count": 2, "lines": [3, 4]}
    assert job["result"]["extra_column"] == "_extra"
    rows = await member.rows(job["result"]["table_url"])
    assert [(r["a"], r["b"], r["_extra"]) for r in rows] == [
        (1, 2, None),
        (3, None, None),
        (4, 5, '["6", "7"]'),
        (8, 9, None),
    ]


async def test_concurrent_imports_into_one_database_are_serialised(member: Member):
    data = big_csv(20_000)
    jobs = await asyncio.gather(*(member.upload(data, table=f"t{i}") for i in range(3)))
    assert [j["state"] for j in jobs] == ["done"] * 3, jobs
    spans = sorted((j["result"]["import_started"], j["result"]["import_finished"]) for j in jobs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    with member.db() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for i in range(3):
            assert conn.execute(f"SELECT count(*) FROM t{i}").fetchone()[0] == 20_000


async def _stop_while_importing(member: Member, content: bytes) -> tuple[dict, int]:
    r = await member.post(content, auto="1", table="half")
    job = r.json()["jobs"][0]
    jobs = member.running.app.upload.jobs
    for _ in range(6000):  # bounded: 60 s
        row = jobs.get(job["id"])
        # rows_done > 0: the first batch is in the staging table, inside the open transaction.
        if row.state == "importing" and row.rows_done > 0 and row.pid:
            os.kill(row.pid, signal.SIGSTOP)
            return job, row.pid
        assert row.state in ("analyzing", "queued", "importing"), row
        await asyncio.sleep(0.01)
    raise AssertionError("the import never started")


@pytest.fixture
async def roomy(start_gateway, config: Config) -> Member:
    running = await start_gateway(config, teams=("alpha",))
    return await sign_in(running)


async def test_killed_worker_leaves_no_half_table(roomy: Member):
    job, pid = await _stop_while_importing(roomy, big_csv(300_000))
    os.kill(pid, signal.SIGKILL)
    done = await roomy.wait(job, ("done", "failed"))
    assert done["state"] == "failed" and "stopped" in done["error"]
    with roomy.db() as conn:
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0]
            == 0
        )
        assert staging_tables(conn) == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_gateway_keeps_proxying_during_an_import(roomy: Member):
    r = await roomy.post(big_csv(200_000), auto="1", table="busy")
    job = r.json()["jobs"][0]
    served = 0
    async with roomy.client() as c:
        while True:
            state = (await c.get(job["url"])).json()["state"]
            page = await c.get(roomy.url("/data.json"))
            assert page.status_code == 200, page.text
            served += 1
            if state in ("done", "failed"):
                break
    assert state == "done"
    assert served > 1


async def test_discard_and_the_cap_on_open_jobs(member: Member, monkeypatch):
    from gateway.upload import views

    monkeypatch.setattr(views, "MAX_OPEN_JOBS", 2)
    first = (await member.post(b"a\n1\n")).json()["jobs"][0]
    second = (await member.post(b"a\n2\n")).json()["jobs"][0]
    r = await member.post(b"a\n3\n")
    assert r.status_code == 400 and "Import or discard" in r.json()["detail"]
    await member.wait(first, ("ready",))
    async with member.client() as c:
        r = await c.post(
            first["page"], data={"action": "discard"}, headers={"accept": "application/json"}
        )
    assert r.status_code == 200 and r.json()["state"] == "failed"
    assert r.json()["error"] == "Discarded."
    await member.wait(second, ("ready",))
    assert len(spool_files(member)) == 1  # only the second upload's file is left
    assert (await member.post(b"a\n3\n")).status_code == 202


def upload_workers() -> list[int]:
    """Live (not zombie) worker processes this test's gateway started, read from /proc."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z" and b"gateway.upload.worker" in cmdline:
            found.append(int(entry))
    return found


async def test_at_most_max_workers_run_at_once(roomy: Member, config: Config):
    """The real cap (runner.MAX_WORKERS, not patched): while the team's import lock is held
    (as a long import into the same database holds it), the running workers all wait on it and
    the other jobs stay with no process; released, they all finish."""
    import fcntl

    from gateway.upload.runner import MAX_WORKERS

    jobs = roomy.running.app.upload.jobs
    lock_path = config.teams_dir / "alpha" / ".spool" / "data.db.import-lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # no job can import, so none can finish
        posted = [
            (await roomy.post(big_csv(2_000), auto="1", table=f"w{i}")).json()["jobs"][0]
            for i in range(MAX_WORKERS + 2)
        ]
        for _ in range(6000):  # bounded: 60 s
            queued = [j for j in posted if jobs.get(j["id"]).state == "queued"]
            if len(queued) >= MAX_WORKERS:
                break
            await asyncio.sleep(0.01)
        # The slots are held by workers waiting for the lock: no further worker starts.
        running = [j for j in posted if jobs.get(j["id"]).pid]
        assert len(running) == MAX_WORKERS, [jobs.get(j["id"]) for j in posted]
        assert sorted(upload_workers()) == sorted(jobs.get(j["id"]).pid for j in running)
        waiting = [j for j in posted if jobs.get(j["id"]).pid is None]
        states = {jobs.get(j["id"]).state for j in waiting}
        assert len(waiting) == 2 and states <= {"analyzing", "queued"}, states
    finally:
        os.close(fd)  # releases the lock
    done = [await roomy.wait(j, ("done", "failed")) for j in posted]
    assert [d["state"] for d in done] == ["done"] * len(posted), done


async def test_the_real_cap_on_open_jobs(roomy: Member):
    """views.MAX_OPEN_JOBS as shipped (the other test patches it to 2)."""
    from gateway.upload.views import MAX_OPEN_JOBS

    for i in range(MAX_OPEN_JOBS):
        r = await roomy.post(b"a\n%d\n" % i)
        assert r.status_code == 202, (i, r.text)
    r = await roomy.post(b"a\n-1\n")
    assert r.status_code == 400, r.text
    assert f"already has {MAX_OPEN_JOBS} uploads" in r.json()["detail"]
