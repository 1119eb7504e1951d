"""``python -m gateway.upload.worker <control.db> <job-id>``: one job's CPU work, in a process.

Parsing CSV is CPU-bound Python; in a thread it would hold the GIL and slow the gateway's
proxying. A separate process (at a lower priority) leaves the event loop alone. It dies with
the gateway (PR_SET_PDEATHSIG), so a restarted gateway can safely end the job and drop its
staging table. Progress goes into the control store at most once a second. A job ends from
what the team's database holds (runner.settle): its rows may be published while its record
cannot be written.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from gateway.diskspace import out_of_space
from gateway.store import open_store
from gateway.upload import importer, trash
from gateway.upload.analyze import analyze
from gateway.upload.errors import ImportFailed
from gateway.upload.import_lock import import_lock
from gateway.upload.jobs import Job, Jobs
from gateway.upload.options import resolve
from gateway.upload.runner import settle

log = logging.getLogger("gateway.upload.worker")
PR_SET_PDEATHSIG = 1
PROGRESS_EVERY = 1.0


def team_dir_of(job: Job) -> Path:
    # Spool files live in <team_dir>/.spool/, so the job's own path names its database.
    return Path(job.spool_path).parent.parent


class Worker:
    def __init__(self, jobs: Jobs, job_id: str) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self._last = 0.0

    def progress(self, bytes_done: int, rows_done: int) -> None:
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY:
            self._last = now
            self.jobs.update(self.job_id, bytes_done=bytes_done, rows_done=rows_done)

    def run(self) -> None:
        job = self.jobs.get(self.job_id)
        if job.state == "analyzing":
            self._analyze(job)
            job = self.jobs.get(self.job_id)
        if job.state == "queued":
            self._import(job)

    def _analyze(self, job: Job) -> None:
        analysis = analyze(
            Path(job.spool_path),
            encoding=job.options.get("encoding") or None,
            delimiter=job.options.get("delimiter") or None,
            progress=self.progress,
        )
        if job.auto:
            options = resolve(job.options.get("form", {}), analysis, job.filename)
            self.jobs.update(job.id, state="queued", analysis=analysis, options=options,
                             bytes_done=0, rows_done=0)  # fmt: skip
        else:
            # pid=None: this worker is done with the job, so its exit must not fail it.
            self.jobs.update(job.id, state="ready", analysis=analysis, bytes_done=job.size,
                             rows_done=analysis["rows"], pid=None)  # fmt: skip

    def _import(self, job: Job) -> None:
        team_dir = team_dir_of(job)
        # One import per database at a time; the others wait here in state "queued".
        with import_lock(team_dir):
            self.jobs.update(job.id, state="importing", bytes_done=0, rows_done=0)
            self._last = 0.0  # report the first imported batch at once
            started = time.time()
            replacing = job.options.get("mode") == "replace"
            if replacing:  # named before the import, so a crash mid-way still knows it
                trash.note(team_dir, job.id, original=job.options["table"], filename=job.filename,
                           replaced_at=time.time())  # fmt: skip
            conn = importer.connect(team_dir / "data.db")
            try:
                result = importer.run_import(
                    conn,
                    Path(job.spool_path),
                    job.analysis or {},
                    job.options,
                    job.staging_table,
                    self.progress,
                    job_id=job.id,
                    keep_as=trash.aside_name(job.id) if replacing else None,
                )
                if result.get("replaced_rows") is not None:
                    # The old table, renamed aside in the import's transaction, leaves the
                    # database Datasette serves for the trash, restorable from the dashboard.
                    # Published already: a failure here is finished by the next recovery.
                    try:
                        trash.move_out(conn, team_dir, job.id)
                    except Exception:
                        log.exception("keeping the replaced table %s for later", job.id)
                    result["kept"] = job.id
                elif replacing:
                    trash.forget(team_dir, job.id)  # there was nothing to replace
            except ImportFailed:
                if replacing:
                    trash.forget(team_dir, job.id)
                # A choice made on the review page did not fit the data: the job goes back
                # to review (main()), so its spool is kept for the retry.
                if not returns_to_review(job):
                    remove_spool(job)
                raise
            except BaseException:
                remove_spool(job)
                if replacing:
                    trash.forget(team_dir, job.id)
                raise
            else:
                # Published: the spool goes now, before any record is written (a full disk
                # may refuse that write).
                remove_spool(job)
            finally:
                with contextlib.suppress(Exception):
                    importer.drop_staging(conn, job.staging_table)
                conn.close()
            # Inside the lock: the times show that imports into one database never overlap.
            result.update(import_started=started, import_finished=time.time())
        self.jobs.update(job.id, state="done", result=result, bytes_done=job.size,
                         rows_done=result["rows"], pid=None)  # fmt: skip


def returns_to_review(job: Job) -> bool:
    """A failed import of a reviewed (not automatic) job goes back to review."""
    return job.state in ("queued", "importing") and not job.auto and bool(job.analysis)


def remove_spool(job: Job) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(job.spool_path)


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The gateway's event loop comes first on a busy machine: a CPU-bound batch job at a low
    # weight (nice 10 is ~1/10 of nice 0's share) only uses what proxying leaves.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.nice(10)
    control_db, job_id = Path(argv[0]), argv[1]
    store = open_store(control_db)
    jobs = Jobs(store)
    spool = jobs.get(job_id)  # read before anything is written: it works on a full disk too
    try:
        jobs.update(job_id, pid=os.getpid())  # cleared again when this run hands the job on
        Worker(jobs, job_id).run()
    except ImportFailed as exc:
        job = jobs.get(job_id)
        if returns_to_review(job):
            # The file was fine; the choices on the review page were not (an append whose
            # columns clash, a primary key with repeats). Back to review, the spool kept.
            rows = (job.analysis or {}).get("rows", 0)
            try:
                jobs.update(job_id, state="ready", error=str(exc), pid=None,
                            bytes_done=job.size, rows_done=rows)  # fmt: skip
            except Exception:  # the record cannot be written (a full disk): end it instead
                _end_failed(jobs, spool, str(exc))
        else:
            _end_failed(jobs, spool, str(exc))
    except Exception as exc:
        traceback.print_exc()
        message = (
            "The import stopped: the server is out of storage space."
            if out_of_space(exc)
            else "The import failed because of an internal error; it was logged."
        )
        _end_failed(jobs, spool, message)
        return 1
    finally:
        store.close()
    return 0


def _end_failed(jobs: Jobs, job: Job, message: str) -> None:
    """End the job truthfully (done if its rows were published before the error, such as a
    full disk refusing the record) if the control store still takes writes; the spool goes
    anyway. A job whose end cannot be written is ended by the gateway later (runner.settle)."""
    try:
        settle(jobs, job, message)
    except Exception:
        traceback.print_exc()
    finally:
        remove_spool(job)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
