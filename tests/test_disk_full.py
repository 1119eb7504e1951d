"""A full disk is a state, not a crash: on a small real tmpfs, sign-in answers the out-of-space
page (507, Retry-After), never 500; /readyz and /metrics say the space is low; reads keep
working; everything recovers once space is freed; an import ends truthfully, `failed` when the
disk filled before its rows were published, `done` when it filled after. Mounting needs root
(as CI runs)."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.config import Config
from tests.auth_support import PASSWORD, Browser, browsers, make_user
from tests.conftest import Running, StartGateway
from tests.test_metrics_events import one, scrape

__all__ = ["browsers"]
Make = Callable[[Running], Browser]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(vol)], check=True)
    try:
        yield vol
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=True)


def fill(path: Path) -> None:
    """Write until the file system says it is full (ENOSPC)."""
    # Unbuffered: a buffered file's close would retry the refused bytes, and raise again.
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError):  # the last partial block, if the close needs room
        os.truncate(path, path.stat().st_size)


async def test_sign_in_on_a_full_disk_is_507_and_recovers(
    config: Config, start_gateway: StartGateway, browsers: Make, small_volume: Path
) -> None:
    cfg = config.replace(data_dir=small_volume / "data", min_free_mb=2)
    gw = await start_gateway(cfg)
    make_user(gw, "ann@example.org", {})
    async with gw.client() as client:
        assert (await client.get(gw.url(None, "/-/gateway/readyz"))).status_code == 200
    assert one(scrape(gw.app), "gateway_data_dir_low_space") == 0
    assert one(scrape(gw.app), "gateway_data_dir_free_bytes") > 2 * 1024 * 1024

    b = browsers(gw)
    token = await b.token("/login")  # the form is read while there is room (reads work anyway)
    filler = small_volume / "filler"
    fill(filler)
    r = await b.post(
        "/login", {"email": "ann@example.org", "password": PASSWORD, "csrf_token": token}
    )
    assert r.status_code == 507, (r.status_code, r.text[:300])
    assert "out of storage space" in r.text and r.headers["retry-after"] == "60"
    async with gw.client() as client:
        ready = await client.get(gw.url(None, "/-/gateway/readyz"))
        home = await client.get(gw.url(None, "/login"))
    assert ready.status_code == 503 and "below --min-free-mb" in ready.json()["problem"]
    assert home.status_code == 200  # reads keep working
    assert one(scrape(gw.app), "gateway_data_dir_low_space") == 1

    filler.unlink()
    async with gw.client() as client:
        assert (await client.get(gw.url(None, "/-/gateway/readyz"))).status_code == 200
    r = await b.post("/login", {"email": "ann@example.org", "password": PASSWORD})
    assert r.status_code == 303, (r.status_code, r.text[:300])  # signed in


def test_an_import_on_a_full_disk_ends_failed_and_leaves_no_spool(
    config: Config, small_volume: Path
) -> None:
    import sys

    from gateway.runtimes.base import prepare_team_dir
    from gateway.store import open_store
    from gateway.upload.jobs import Jobs
    from gateway.upload.runner import Runner

    cfg = config.replace(data_dir=small_volume / "data")
    store = open_store(cfg.control_db)
    store.create_team("alpha")
    team_dir = cfg.teams_dir / "alpha"
    prepare_team_dir(team_dir)
    (team_dir / ".spool").mkdir()
    spool = team_dir / ".spool" / "job1.upload"
    spool.write_text("id,name\n" + "".join(f"{i},row {i}\n" for i in range(2000)))
    jobs = Jobs(store)
    size = spool.stat().st_size
    jobs.create(job_id="job1", team="alpha", user_id=None, filename="t.csv",
                spool_path=str(spool), size=size, auto=True, options={})  # fmt: skip
    filler = small_volume / "filler"
    fill(filler)  # the worker can write neither its progress nor its result
    worker = subprocess.run(
        [sys.executable, "-m", "gateway.upload.worker", str(cfg.control_db), "job1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 1, worker.stderr
    assert not spool.exists()  # removed although the job's record could not be written
    filler.unlink()
    Runner(cfg, store).recover()  # the next start: the job ends, truthfully failed
    job = jobs.get("job1")
    assert job.state == "failed", job
    assert list((team_dir / ".spool").glob("*.upload")) == []
    store.close()


def test_an_import_published_before_the_disk_filled_ends_done(
    config: Config, small_volume: Path
) -> None:
    """The issue's case: the rows are published into the team's database, then the disk is full
    and the job's own record cannot be written. The worker is held for real between the two
    (tests/upload_support.py), the disk filled there, then let go: its record of the end is
    refused, the job stays `importing`, the spool goes. Once space is freed, the next start
    reads the publication marker: `done`, with the row count, not `failed`."""
    import sys

    from gateway.runtimes.base import prepare_team_dir
    from gateway.store import open_store
    from gateway.upload.jobs import Jobs
    from gateway.upload.runner import Runner
    from tests.upload_support import hold_after_publication, two_batches

    cfg = config.replace(data_dir=small_volume / "data")
    store = open_store(cfg.control_db)
    store.create_team("alpha")
    team_dir = cfg.teams_dir / "alpha"
    prepare_team_dir(team_dir)
    (team_dir / ".spool").mkdir()
    jobs = Jobs(store)
    csv = two_batches()
    rows = csv.count(b"\n") - 1
    filler = small_volume / "filler"
    held = None
    for attempt in range(4):  # the hold races the worker's first report: see its docstring
        job_id, table = f"job{attempt}", f"kept{attempt}"
        spool = team_dir / ".spool" / f"{job_id}.upload"
        spool.write_bytes(csv)
        jobs.create(job_id=job_id, team="alpha", user_id=None, filename="kept.csv",
                    spool_path=str(spool), size=len(csv), auto=True,
                    options={"form": {"table": table}})  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "gateway.upload.worker", str(cfg.control_db), job_id],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            held = hold_after_publication(cfg.control_db, team_dir / "data.db", job_id, table)
            if held is not None:
                fill(filler)  # the record of the end cannot be written now
                held.execute("ROLLBACK")
                held.close()
            out, _ = worker.communicate(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if held is not None:
            break
        assert jobs.get(job_id).state == "done", out
    assert held is not None, "the worker was never held after its publication"
    assert "database or disk is full" in out, out  # the record of `done` was refused
    assert not spool.exists()
    # The worker's own second try (runner.settle) may find room for `done` in the control
    # store's WAL (the refused commit's frames were allocated) or not: either way never
    # `failed`; not yet written, it is the next start's to write.
    assert jobs.get(job_id).state in ("importing", "done")

    filler.unlink()
    Runner(cfg, store).recover()  # the next start
    job = jobs.get(job_id)
    assert (job.state, job.error, job.rows_done) == ("done", None, rows), job
    assert job.result is not None and (job.result["table"], job.result["rows"]) == (table, rows)
    db = sqlite3.connect(team_dir / "data.db")
    try:
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    assert list((team_dir / ".spool").glob("*.upload")) == []
    store.close()
