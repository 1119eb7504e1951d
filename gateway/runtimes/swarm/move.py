"""Move a team to another Swarm node with no failed request (``gateway teams move``).

    1. resolve the node (id, hostname or KEY=VALUE node label) to a placement constraint
    2. pause and unroute the team (new requests are held, never sent); wait until none is in
       flight, and take the import lock (no upload writes the file meanwhile)
    3. copy its database through SQLite's backup API (consistent), verify it
       (``PRAGMA integrity_check``), swap it in; the old file goes aside (the old instance,
       idle, keeps its open files)
    4. record the new placement and start a new instance there; wait until it is healthy
    5. cut over, release the lock, resume (the held requests, writes too, go to the new
       instance), drain and remove the old service, delete the old file

Any failure before the cut-over undoes it all: the new service is removed, the old file and
placement come back, and the old instance, never stopped, is routed again and gets the held
requests.

A team's volume is ``<teams_dir>/<team>`` on its node. The gateway reaches tenant tasks only on
its own node (runtime.py), so the copy is made on that disk and only the database file is new
(the spool and the trash stay where they are); with tenants on several nodes the copy would be
a restore from the backup replica on the new node, or a copy task there (docs/production.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import GatewayError, RuntimeUnavailable, TeamBusy
from gateway.routing.target import State, Target

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.fleet import Fleet
    from gateway.store import Store
    from gateway.upload import UploadApp

log = logging.getLogger("gateway.swarm")

SIDECARS = ("-wal", "-shm")
IMPORT_LOCK = Path(".spool") / "data.db.import-lock"  # gateway/upload/worker.py's lock

Progress = Callable[[str], None]


class MoveFailed(GatewayError):
    """The move was undone: the team serves from where it was."""


class MoveParts(Protocol):
    """What a move uses (the gateway built in app.py has it)."""

    config: Config
    store: Store
    fleet: Fleet
    upload: UploadApp


@dataclass
class MoveResult:
    team: str
    node: str  # the node id it runs on now
    placement: str  # the constraint its services carry
    seconds: float
    held: float  # seconds its requests were held

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def move_team(gw: MoveParts, slug: str, node: str, progress: Progress) -> MoveResult:
    from gateway.runtimes.swarm.runtime import SwarmRuntime

    runtime = gw.fleet.runtime
    if not isinstance(runtime, SwarmRuntime):
        raise RuntimeUnavailable(
            f"the {runtime.name} runtime runs every team on this one host: there is no node to "
            "move to (moves need --runtime swarm)"
        )
    gw.fleet.require(slug)
    await gw.fleet.settled(slug)
    with gw.fleet.claim(slug, "move"):
        unfinished = [j.id for j in gw.upload.jobs.unfinished() if j.team == slug]
        if unfinished:  # an import writes the file itself, not through the paused instance
            raise TeamBusy(
                f"an import into {slug} is under way (job {unfinished[0]}); "
                "move the team once it has finished or failed"
            )
        placement, node_id = await asyncio.to_thread(runtime.resolve_node, node)
        progress(f"moving {slug} to node {node_id} ({placement})")
        return await _move(gw, runtime, slug, placement, node_id, progress)


@dataclass
class _Move:
    """One move under way: what to undo if it fails."""

    gw: MoveParts
    runtime: Any
    slug: str
    old_targets: list[Target]
    old_placement: str
    db: Path  # the team's database, <teams_dir>/<team>/data.db
    copy: Path
    aside: Path
    swapped: bool = False
    new: tuple[Any, Target] | None = None
    frozen: list[Any] = field(default_factory=list)  # old instances paused in their container


async def _move(
    gw: MoveParts, runtime: Any, slug: str, placement: str, node_id: str, progress: Progress
) -> MoveResult:
    fleet, store, config = gw.fleet, gw.store, gw.config
    started = time.monotonic()
    service = fleet.require(slug)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    move = _Move(
        gw,
        runtime,
        slug,
        list(service.targets()),
        runtime.placement(slug),
        config.teams_dir / slug / "data.db",
        config.data_dir / "moving" / slug / "data.db",
        config.data_dir / "moved" / slug / stamp,
    )
    # Held, and unrouted: even a pause that runs out cannot send a write to the old instance
    # once its file is being copied (a held request waits for the new one, or the undo).
    fleet.pause(slug, config.max_pause)
    service.swap([])
    held_from = time.monotonic()
    progress(f"paused: requests are held (at most {config.max_pause:g}s)")
    # The import lock until the cut-over, or the end of the undo: no import writes a file
    # that is being copied, or one that may be dropped.
    with contextlib.ExitStack() as locks:
        try:
            locks.enter_context(_import_lock(move.db.parent, slug))
            await _until_idle(move.old_targets, config.drain_timeout)
            # Frozen, the old instance opens no file while its database is swapped: after an
            # undo it serves the old file again, with no connection left to the copy.
            for target in move.old_targets:
                inst = fleet.instances.get(target.id, (None, None))[0]
                if inst is not None and await asyncio.to_thread(runtime.freeze, inst):
                    move.frozen.append(inst)
            progress("copying the database")
            size = await asyncio.to_thread(copy_database, move.db, move.copy)
            progress(f"copied {size / 1e6:.1f} MB, integrity_check ok")
            async with _volume_held(fleet, slug, move.db):
                await asyncio.to_thread(_swap, move.db, move.copy, move.aside)
                move.swapped = True
            await asyncio.to_thread(runtime.prepare_volume, slug)
            runtime.pin(slug, placement)
            if not service.sleeping:
                progress(f"starting on node {node_id}")
                move.new = await _start(move)
                progress("healthy there: cutting over")
                service.swap([move.new[1]])
                with store.transaction() as conn:
                    conn.execute(
                        "UPDATE instances SET role = 'active' WHERE id = ?", [move.new[0].id]
                    )
                    conn.executemany(
                        "UPDATE instances SET role = 'retired' WHERE id = ?",
                        [[t.id] for t in move.old_targets],
                    )
        except Exception as exc:
            progress(f"failed ({exc or type(exc).__name__}): undoing")
            await _undo(move)
            fleet.resume(slug)
            progress("undone: the team serves from where it was")
            raise MoveFailed(f"move of {slug} failed, nothing changed: {exc}") from exc
    fleet.resume(slug)
    held = time.monotonic() - held_from
    progress(f"resumed after {held:.1f}s; draining the old service")
    await _thaw(move)  # a frozen container would not stop within its grace period
    results = await asyncio.gather(*(fleet.stop_target(t) for t in move.old_targets))
    fleet.drains.extend(results)
    for target in move.old_targets:
        store.remove_instance(target.id)
    for path in (move.copy.parent, move.aside.parent):
        await asyncio.to_thread(shutil.rmtree, path, True)
    progress("old service and old database removed")
    seconds = time.monotonic() - started
    log.info("moved %s to %s in %.1fs (held %.1fs)", slug, placement, seconds, held)
    return MoveResult(slug, node_id, placement, round(seconds, 3), round(held, 3))


async def _until_idle(targets: list[Target], timeout: float) -> None:
    """Requests sent before the pause finish on the old instance before its file is copied."""
    deadline = time.monotonic() + timeout
    while any(t.inflight for t in targets):
        if time.monotonic() > deadline:
            busy = sum(t.inflight for t in targets)
            raise MoveFailed(f"{busy} request(s) still in flight after {timeout:g}s")
        await asyncio.sleep(0.02)


async def _start(move: _Move) -> tuple[Any, Target]:
    gw, fleet = move.gw, move.gw.fleet
    service = fleet.require(move.slug)
    # The version it runs now: a move changes the node, not the image.
    active = [i for i in gw.store.instances(move.slug) if i.role == "active"]
    version = active[0].version if active else fleet.runtime.version()
    inst = gw.store.add_instance(move.slug, fleet.runtime.name, role="candidate", version=version)
    target = fleet.new_target(inst, service)
    move.new = (inst, target)
    await fleet.start_target(inst, target)
    deadline = time.monotonic() + gw.config.deploy_timeout
    while target.state is not State.HEALTHY:
        if target.start_error:
            raise MoveFailed(target.start_error)
        if time.monotonic() > deadline:
            why = f": {target.last_error}" if target.last_error else ""
            raise MoveFailed(
                f"the new instance was not healthy within {gw.config.deploy_timeout:g}s{why}"
            )
        await asyncio.sleep(0.05)
    return inst, target


async def _undo(move: _Move) -> None:
    """Back to where it was: the old instance never stopped, so routing it again is enough
    once the new service, placement and volume are undone."""
    gw, fleet = move.gw, move.gw.fleet
    if move.new is not None:
        inst, target = move.new
        fleet.health.unwatch(target)
        target.stop()
        fleet.instances.pop(inst.id, None)
        with contextlib.suppress(Exception):
            await move.runtime.stop(inst)
        gw.store.remove_instance(inst.id)
    move.runtime.pin(move.slug, move.old_placement)
    if move.swapped:
        async with _volume_held(fleet, move.slug, move.db):
            await asyncio.to_thread(_swap_back, move.db, move.aside)
    await _thaw(move)
    fleet.require(move.slug).swap(move.old_targets)
    for path in (move.copy.parent, move.aside.parent):
        await asyncio.to_thread(shutil.rmtree, path, True)


async def _thaw(move: _Move) -> None:
    for inst in move.frozen:
        await asyncio.to_thread(move.runtime.thaw, inst)
    move.frozen.clear()


# -- the volume --------------------------------------------------------------------------------
def copy_database(db: Path, copy: Path) -> int:
    """A consistent copy of the team's database (SQLite's backup API, so a reader on the old
    instance changes nothing), in WAL mode, verified, with the old file's owner and mode.
    Returns its size."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    for path in _with_sidecars(copy):
        path.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = WAL")
        result = [row[0] for row in dst.execute("PRAGMA integrity_check")]
    finally:
        src.close()
        dst.close()
    if result != ["ok"]:
        raise MoveFailed(f"the copy failed PRAGMA integrity_check: {result[:5]}")
    st = db.stat()
    for path in _with_sidecars(copy):
        if path.exists():
            with contextlib.suppress(PermissionError):
                os.chown(path, st.st_uid, st.st_gid)
            os.chmod(path, st.st_mode & 0o7777)
    return copy.stat().st_size


def _with_sidecars(db: Path) -> list[Path]:
    return [db, *(Path(str(db) + s) for s in SIDECARS)]


def _swap(db: Path, copy: Path, aside: Path) -> None:
    """The copy becomes the team's database; the old one (WAL, SHM, Litestream's state) goes
    aside. Renames on one file system: the old instance keeps its open files until it stops."""
    aside.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    try:
        for path in (*_with_sidecars(db), db.parent / f".{db.name}-litestream"):
            if path.exists():
                os.replace(path, aside / path.name)
                moved.append(path)
        for path in _with_sidecars(copy):
            if path.exists():
                os.replace(path, db.parent / path.name)
    except BaseException:
        for path in _with_sidecars(db):
            if path not in moved:  # the copy's, if any got in
                path.unlink(missing_ok=True)
        for path in moved:
            os.replace(aside / path.name, path)
        raise


def _swap_back(db: Path, aside: Path) -> None:
    """Undo a whole ``_swap``: every database file in place is the copy's (the new instance
    has stopped), so they go, and the old ones come back."""
    for path in _with_sidecars(db):
        path.unlink(missing_ok=True)
    # Replication's state of the copy (it was registered once swapped in).
    shutil.rmtree(db.parent / f".{db.name}-litestream", ignore_errors=True)
    for path in sorted(aside.iterdir()):
        os.replace(path, db.parent / path.name)


@contextlib.contextmanager
def _import_lock(team_dir: Path, slug: str) -> Iterator[None]:
    """The import worker's and table edits' lock (gateway/upload/worker.py): none writes
    the file while it is copied and swapped."""
    path = team_dir / IMPORT_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise TeamBusy(f"an import into {slug} is under way; move it once finished") from exc
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def _volume_held(fleet: Fleet, slug: str, db: Path) -> AsyncIterator[None]:
    """Replication (backups) makes its final sync and lets go of the file while it moves."""
    if fleet.volume_guard is None:
        yield
        return
    async with fleet.volume_guard(slug, db):
        yield
