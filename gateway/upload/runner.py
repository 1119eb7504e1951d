"""Start worker processes for jobs, notice when they die, and clean up after a restart.

The gateway never parses CSV itself: each job's work runs in ``gateway.upload.worker``. This
module is the gateway's side: a bounded number of workers at once, a watcher that ends a job
whose worker died without finishing it, and recovery at startup (a worker dies with its
gateway, so every job still marked running is ended and its staging table dropped).

A job is ended from what is really in the team's database (``settle``): ``done`` when its
publication marker is there (the rows went live but the record could not be written: a full
disk, or a gateway killed between the two), else ``failed`` with nothing half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.store.db import Store
from gateway.upload import tables
from gateway.upload.importer import connect, drop_staging, publication
from gateway.upload.jobs import RUNNING, STAGING_PREFIX, Job, Jobs
from gateway.upload.receive import remove_quietly

log = logging.getLogger("gateway.upload")
MAX_WORKERS = 2  # the machine's cores are for proxying first
STOP_GRACE = 5.0
SWEEP_EVERY = 5.0
PART_MAX_AGE = 3600.0
TRASH_EVERY = 3600.0


class Runner:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.jobs = Jobs(store)
        self._slots = asyncio.Semaphore(MAX_WORKERS)
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # job id -> pid of the worker this gateway runs for it (None while it waits for a slot)
        self._owner: dict[str, int | None] = {}
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await asyncio.to_thread(self.recover)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="job-sweep")

    def start(self, job_id: str) -> None:
        self._owner[job_id] = None
        task = asyncio.get_running_loop().create_task(self._run(job_id), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str) -> None:
        async with self._slots:
            if self._closing:
                return
            job = self.jobs.get(job_id)
            log_path = Path(job.spool_path).parent / "worker.log"
            with open(log_path, "ab") as logfile:  # noqa: ASYNC230 (opening a log is instant)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway.upload.worker",
                    str(self.config.control_db), job_id,
                    stdin=asyncio.subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                )  # fmt: skip
            self._procs[job_id] = proc
            self._owner[job_id] = proc.pid
            code = await proc.wait()
            self._procs.pop(job_id, None)
        if self._owner.get(job_id) != proc.pid:
            return  # the job was handed on (ready, then confirmed): a newer run owns it
        del self._owner[job_id]
        job = self.jobs.get(job_id)
        if job.state in RUNNING:
            reason = "the gateway stopped" if self._closing else f"exit status {code}"
            try:
                await asyncio.to_thread(settle, self.jobs, job, f"The import stopped ({reason}).")
            except Exception:  # undecided or unrecorded (a full disk): retried by the sweep
                log.exception("could not end import job %s", job.id)

    async def close(self) -> None:
        """Stop running workers; their jobs are ended (settle) and staging tables dropped."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in list(self._procs.values()):
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_GRACE)

    def recover(self) -> None:
        """At startup: end every job whose worker is gone (done if its rows were published,
        else failed), drop staging tables nobody owns.

        Workers die with their gateway (PR_SET_PDEATHSIG). During a socket hand-over restart
        the predecessor and its workers may still be finishing, so a job whose worker is
        alive is left alone; the sweep ends it later if that worker dies.
        """
        alive = set()
        for job in self.jobs.unfinished():
            if job.pid is not None and worker_alive(job.pid, job.id):
                alive.add(job.staging_table)
                continue
            try:
                settle(self.jobs, job, "The import was interrupted by a gateway restart.")
            except Exception:  # undecided for now: left running, so the sweep tries again
                log.exception("could not end import job %s at start", job.id)
        for db_path in sorted(self.config.teams_dir.glob("*/data.db")):
            drop_all_staging(db_path, keep=alive)
        self.recover_trash()
        keep = {Path(j.spool_path) for j in self.jobs.ready() + self.jobs.unfinished()}
        for spool in self.config.teams_dir.glob("*/.spool/*.upload"):
            if spool not in keep:
                remove_quietly(spool)
        # A ".part" may still be streaming into a predecessor gateway: only old ones go.
        stale = time.time() - PART_MAX_AGE
        for part in self.config.teams_dir.glob("*/.spool/*.part"):
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < stale:
                    remove_quietly(part)

    def recover_trash(self) -> None:
        """Replaced tables: finish moves a crash cut short, purge the expired (trash.py). The
        worker writes .trash/ before it renames a table aside, so only those teams are seen."""
        for team_dir in sorted(p.parent for p in self.config.teams_dir.glob("*/.trash")):
            try:
                tables.recover_trash(team_dir, self.config.replaced_table_days)
            except (OSError, sqlite3.Error):
                log.exception("could not tidy the replaced tables of %s", team_dir.name)

    async def _sweep(self) -> None:
        """End jobs whose worker died unseen (one started by a predecessor gateway), or whose
        end could not be recorded when it died (a full disk): retried until it is. Hourly,
        purge expired replaced tables."""
        rounds = 0
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            rounds += 1
            if rounds % int(TRASH_EVERY / SWEEP_EVERY) == 0:
                await asyncio.to_thread(self.recover_trash)
            for job in await asyncio.to_thread(self.jobs.unfinished):
                if job.id in self._owner or job.pid is None:
                    continue
                if not await asyncio.to_thread(worker_alive, job.pid, job.id):
                    try:
                        await asyncio.to_thread(
                            settle, self.jobs, job, "The import process stopped."
                        )
                    except Exception:  # undecided or unrecorded (a full disk)
                        log.exception("could not end import job %s; retrying", job.id)


def settle(jobs: Jobs, job: Job, message: str) -> None:
    """End a job whose worker is gone, truthfully: ``done`` with its result when the team's
    database holds its publication marker, else ``failed`` with ``message`` and its staging
    table dropped. The spool goes either way, even when the record cannot be written.

    Raises, leaving the job running for a later try (the sweep, the next start), when the
    database cannot be read now (busy, or a full disk refusing its -shm file): guessing
    ``failed`` there could be the very untruth the marker exists to prevent."""
    db_path = Path(job.spool_path).parent.parent / "data.db"
    result: dict[str, Any] | None = None
    unpublished = False
    try:
        try:
            result = publication(db_path, job.id)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:  # not a database any more: no rows of it are live
            log.exception("could not read the publication of job %s in %s", job.id, db_path)
        if result is not None:
            log.info("import job %s was published before it ended; recorded as done", job.id)
            jobs.update(job.id, state="done", result=result, error=None, pid=None,
                        bytes_done=job.size, rows_done=result["rows"])  # fmt: skip
            return
        unpublished = True
        jobs.fail(job.id, message)
    finally:
        remove_quietly(Path(job.spool_path))
        if unpublished and db_path.exists():
            try:
                conn = connect(db_path)
                try:
                    drop_staging(conn, job.staging_table)
                finally:
                    conn.close()
            except sqlite3.Error:
                log.exception("could not drop %s in %s", job.staging_table, db_path)


def worker_alive(pid: int, job_id: str) -> bool:
    """Is ``pid`` still the worker for this job (not a recycled pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"gateway.upload.worker" in cmdline and job_id.encode() in cmdline


def drop_all_staging(db_path: Path, keep: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    try:
        conn = connect(db_path)
        try:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
                [STAGING_PREFIX.replace("_", "\\_") + "%"],
            ).fetchall()
            for (name,) in rows:
                if name not in keep:
                    drop_staging(conn, name)
        finally:
            conn.close()
    except sqlite3.Error:
        log.exception("could not clean staging tables in %s", db_path)
