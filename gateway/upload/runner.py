"""Start worker processes for jobs, notice when they die, and clean up after a restart.

The gateway never parses CSV itself: each job's work runs in ``gateway.upload.worker``. This
module is the gateway's side: a bounded number of workers at once, a watcher that fails a job
whose worker died without finishing it, and recovery at startup (a worker dies with its
gateway, so every job still marked running is failed and its staging table dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from pathlib import Path

from gateway.config import Config
from gateway.store.db import Store
from gateway.upload.importer import connect, drop_staging
from gateway.upload.jobs import RUNNING, STAGING_PREFIX, Job, Jobs
from gateway.upload.receive import remove_quietly

log = logging.getLogger("gateway.upload")
MAX_WORKERS = 2  # the machine's cores are for proxying first
STOP_GRACE = 5.0


class Runner:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.jobs = Jobs(store)
        self._slots = asyncio.Semaphore(MAX_WORKERS)
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self, job_id: str) -> None:
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
            self.jobs.update(job_id, pid=proc.pid)
            code = await proc.wait()
            self._procs.pop(job_id, None)
        job = self.jobs.get(job_id)
        # Only a worker that still owns the job (its pid) left it unfinished; a worker that
        # handed it on (ready, then confirmed and queued) cleared the pid first.
        if job.state in RUNNING and job.pid == proc.pid:
            reason = "the gateway stopped" if self._closing else f"exit status {code}"
            await asyncio.to_thread(
                fail_and_clean, self.jobs, job, f"The import stopped ({reason})."
            )

    async def close(self) -> None:
        """Stop running workers; their jobs are failed and their staging tables dropped."""
        self._closing = True
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
        """At startup: no worker of ours is alive, so nothing may still be marked running."""
        for job in self.jobs.unfinished():
            fail_and_clean(self.jobs, job, "The import was interrupted by a gateway restart.")
        for db_path in sorted(self.config.teams_dir.glob("*/data.db")):
            drop_all_staging(db_path)
        keep = {Path(j.spool_path) for j in self.jobs.ready()}
        for spool in self.config.teams_dir.glob("*/.spool/*.upload"):
            if spool not in keep:
                remove_quietly(spool)


def fail_and_clean(jobs: Jobs, job: Job, message: str) -> None:
    jobs.fail(job.id, message)
    remove_quietly(Path(job.spool_path))
    db_path = Path(job.spool_path).parent.parent / "data.db"
    if db_path.exists():
        try:
            conn = connect(db_path)
            try:
                drop_staging(conn, job.staging_table)
            finally:
                conn.close()
        except sqlite3.Error:
            log.exception("could not drop %s in %s", job.staging_table, db_path)


def drop_all_staging(db_path: Path) -> None:
    try:
        conn = connect(db_path)
        try:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
                [STAGING_PREFIX.replace("_", "\\_") + "%"],
            ).fetchall()
            for (name,) in rows:
                drop_staging(conn, name)
        finally:
            conn.close()
    except sqlite3.Error:
        log.exception("could not clean staging tables in %s", db_path)
