"""Restore a team's database (or the control store) from its replica, to now or a point in time.

A team restore in a running gateway (``restore_team``):

    1. check the point: not in the future, not before the team existed, not past retention
    2. pause the team (new requests are held, never sent) and drain its instance
    3. take its database out of replication (after a final sync) and restore into a new file
    4. verify it (PRAGMA integrity_check), move the old file aside, swap the new one in
    5. start a new instance on it, wait until healthy, resume: held requests are served

While it runs the team is held for the restore alone (``Fleet.claim``): a deploy, a delete's
drain or a second restore is refused (409) rather than queued, since each would stop the
instance or move the file the restore is swapping (a delete confirmed in the store meanwhile goes
ahead once the restore has finished). It also holds the team's import lock: an import confirmed
meanwhile waits in "queued" and then applies to the restored file, never to the one moved aside.

A failure before the swap changes nothing: the team comes back on its old file. The old file
(with its WAL and Litestream's state) stays in ``<data_dir>/restored/<team>/<time>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.backup.layout import Database, Layout, join_url
from gateway.backup.litestream import BackupError, replica_span, restore
from gateway.errors import TeamBusy, TeamNotFound
from gateway.routing.target import State
from gateway.upload.import_lock import import_lock

if TYPE_CHECKING:
    from gateway.backup.supervisor import Replication
    from gateway.config import Config
    from gateway.fleet import Fleet
    from gateway.store import Store
    from gateway.upload import UploadApp

log = logging.getLogger("gateway.backup")

SIDECARS = ("-wal", "-shm")


class RestoreParts(Protocol):
    """What a team restore in a running gateway uses (the gateway built in app.py has it)."""

    config: Config
    store: Store
    fleet: Fleet
    backups: Replication
    upload: UploadApp


@dataclass
class RestoreResult:
    name: str
    at: str  # the point restored to ("latest" or an RFC 3339 time)
    aside: str  # where the previous file went ("" if there was none)
    seconds: float
    held: float = 0.0  # seconds the team's requests were held

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_point(db: Database, at: datetime | None, created_at: float | None) -> None:
    """Refuse, clearly, a point the replica cannot give back."""
    span = replica_span(db.replica)
    if span.oldest is None or span.newest is None:
        raise BackupError(f"{db.name} has no replica at {db.replica} yet: nothing to restore")
    if at is None:
        return
    now = datetime.now(UTC)
    if at > now:
        raise BackupError(f"{at.isoformat()} is in the future (now is {now.isoformat()})")
    if created_at is not None and at.timestamp() < created_at:
        born = datetime.fromtimestamp(created_at, UTC).isoformat(timespec="seconds")
        raise BackupError(
            f"team {db.name} did not exist at {at.isoformat()}: it was created at {born}"
        )
    # LTX files carry whole seconds: a point within the oldest file's second is restorable.
    if at.replace(microsecond=0) < span.oldest:
        raise BackupError(
            f"{at.isoformat()} is before the oldest restorable point of {db.name} "
            f"({span.oldest.isoformat()}); older history is past retention"
        )


def restore_file(db: Database, at: datetime | None, staging: Path) -> None:
    """Restore into ``staging`` (a new file) and verify it; raises on any doubt."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    for path in (staging, *(Path(str(staging) + s) for s in SIDECARS)):
        path.unlink(missing_ok=True)
    restore(db.replica, staging, at)
    verify(staging)


def verify(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        conn.execute("PRAGMA journal_mode = WAL")  # the gateway's databases all run in WAL
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the restored file is not a database: {exc}") from exc
    finally:
        conn.close()
    if result != ["ok"]:
        raise BackupError(f"the restored file failed PRAGMA integrity_check: {result[:5]}")


def swap_in(layout: Layout, db: Database, staging: Path) -> Path | None:
    """Move the old file (its WAL, SHM and Litestream state) aside; put ``staging`` in its
    place with the old file's owner and mode. Returns where the old file went."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = layout.config.data_dir / "restored" / db.name / stamp
    target = db.path
    meta = target.parent / f".{target.name}-litestream"
    moved: list[Path] = []
    try:
        for path in (target, *(Path(str(target) + s) for s in SIDECARS), meta):
            if path.exists():
                aside.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(aside / path.name))
                moved.append(path)
        _install(staging, target, aside)
    except BaseException:
        for path in moved:  # put the old files back: a failed swap changes nothing
            shutil.move(str(aside / path.name), str(path))
        raise
    return aside if moved else None


def _install(staging: Path, target: Path, aside: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # The instance (a container's own user, say) must be able to write the new file: it gets
    # the old file's owner and mode, or its directory's owner when the old file was lost.
    old = aside / target.name
    st = old.stat() if old.exists() else target.parent.stat()
    with contextlib.suppress(PermissionError):
        os.chown(staging, st.st_uid, st.st_gid)
    if old.exists():
        os.chmod(staging, st.st_mode & 0o7777)
    for suffix in SIDECARS:
        Path(str(staging) + suffix).unlink(missing_ok=True)
    os.replace(staging, target)


def _staging(layout: Layout, db: Database) -> Path:
    # Same file system as the target, so the swap is a rename.
    return layout.config.data_dir / "litestream" / "staging" / f"{db.name}.db"


def _label(at: datetime | None) -> str:
    return "latest" if at is None else at.isoformat()


# -- a running gateway: pause, drain, restore, swap, resume --------------------------------------
async def restore_team(gw: RestoreParts, slug: str, at: datetime | None) -> RestoreResult:
    team = gw.store.team(slug)
    if team.state != "active":
        raise TeamBusy(f"team {slug} is being deleted; there is nothing to restore it into")
    gw.fleet.require(slug)
    with gw.fleet.claim(slug, "restore"), _imports_held(gw.config.teams_dir / slug, slug):
        return await _restore_team(gw, slug, at)


@contextlib.contextmanager
def _imports_held(team_dir: Path, slug: str) -> Iterator[None]:
    """The team's import lock (gateway/upload/import_lock.py), without waiting: an import
    confirmed meanwhile, or a dashboard table edit, waits until the swap is done."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(import_lock(team_dir, wait=False))
        except BlockingIOError as exc:
            raise TeamBusy(
                f"an import into {slug} is under way; restore once it has finished or failed"
            ) from exc
        yield


async def _restore_team(gw: RestoreParts, slug: str, at: datetime | None) -> RestoreResult:
    started = time.monotonic()
    fleet, replication = gw.fleet, gw.backups
    team = gw.store.team(slug)
    service = fleet.require(slug)
    db = replication.layout.team(slug, team.created_at)
    running = [j.id for j in gw.upload.jobs.unfinished() if j.team == slug]
    if running:  # an import worker writes the file itself, not through the paused instance
        raise TeamBusy(
            f"an import into {slug} is under way (job {running[0]}); "
            "restore once it has finished or failed"
        )
    await asyncio.to_thread(check_point, db, at, team.created_at)

    fleet.pause(slug, gw.config.max_pause)
    held_from = time.monotonic()
    aside: Path | None = None
    failure: BaseException | None = None
    try:
        old = list(service.targets())
        fleet.drains.extend(await asyncio.gather(*(fleet.stop_target(t) for t in old)))
        for target in old:
            service.remove_target(target)
            gw.store.remove_instance(target.id)
        for inst in gw.store.instances(slug):  # a sleeping team's instance, never started
            if inst.role == "active" and inst.id not in fleet.instances:
                gw.store.remove_instance(inst.id)
        try:
            async with replication.held(slug, db.path):
                staging = _staging(replication.layout, db)
                await asyncio.to_thread(restore_file, db, at, staging)
                aside = await asyncio.to_thread(swap_in, replication.layout, db, staging)
        except Exception as exc:  # the old file is untouched: bring the team back on it
            failure = exc
        await _start_instance(gw, slug)
    finally:
        fleet.resume(slug)
    held = time.monotonic() - held_from
    if failure is not None:
        raise BackupError(f"restore of {slug} failed, nothing changed: {failure}") from failure
    seconds = time.monotonic() - started
    log.info("restored %s to %s in %.1fs (held %.1fs)", slug, _label(at), seconds, held)
    return RestoreResult(slug, _label(at), str(aside or ""), round(seconds, 3), round(held, 3))


async def _start_instance(gw: RestoreParts, slug: str) -> None:
    fleet = gw.fleet
    service = fleet.require(slug)
    inst = gw.store.add_instance(slug, fleet.runtime.name, version=fleet.runtime.version())
    target = fleet.new_target(inst, service)
    fleet.awake_now(slug)  # a restored sleeper comes back awake, on the restored file
    await fleet.start_target(inst, target)
    deadline = time.monotonic() + gw.config.deploy_timeout
    while target.state is not State.HEALTHY:
        if time.monotonic() > deadline:
            break  # routed anyway: the health monitor keeps checking, requests are held
        await asyncio.sleep(0.05)
    service.swap([target])


# -- no gateway running: the control store, or a team while everything is stopped ----------------
def restore_offline(
    layout: Layout, db: Database, at: datetime | None, created_at: float | None
) -> RestoreResult:
    """Restore ``db`` with no gateway running (so nothing has it open)."""
    started = time.monotonic()
    check_point(db, at, created_at)
    staging = _staging(layout, db)
    restore_file(db, at, staging)
    aside = swap_in(layout, db, staging)
    return RestoreResult(
        db.name, _label(at), str(aside or ""), round(time.monotonic() - started, 3)
    )


def team_database(layout: Layout, gw_store: Any, slug: str) -> tuple[Database, float]:
    try:
        team = gw_store.team(slug)
    except TeamNotFound as exc:
        raise BackupError(
            f"there is no team {slug!r}; the replicas of deleted teams of that name (if any) "
            f"are under {join_url(layout.root, f'teams/{slug}')}"
        ) from exc
    return layout.team(slug, team.created_at), float(team.created_at)
