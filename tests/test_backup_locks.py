"""A restore holds its team against every other operation that replaces the team's instance or
file (issue 15): a deploy, a delete and a second restore are refused in one line (CLI exit 1,
API 409); a deploy holds it the same way against a restore; a delete already in the store waits
for the restore; an import confirmed mid-restore waits and lands in the restored file.

Real processes throughout: the gateway (``tests/edge.py``: real listeners, the running lock,
Litestream, Datasette) and the ``gateway`` CLI run as separate processes against its admin
listener. A restore or deploy is held mid-way by a request whose body is still being sent: the
drain of the team's instance waits for it, and finishing the body lets the operation go on.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest

from gateway.config import Config
from gateway.routing.target import Target
from tests.edge import Edge, run_edge
from tests.test_backup import post_rows, prepare, team_token, uids, wait_replicating
from tests.upload_support import Member, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # several CLI processes each

BUSY_RESTORE = "team alpha is being restored right now"
CLI_BOUND = 50  # seconds: a refusal is immediate; an operation that was let through is not


@pytest.fixture
async def edge(config: Config) -> AsyncIterator[Edge]:
    # Long drains and pauses: the held request decides when an operation goes on, not a timer.
    cfg = config.replace(max_pause=120, deploy_timeout=60, drain_timeout=120, body_idle_timeout=300)
    prepare(cfg, "alpha")
    async with run_edge(cfg, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        await wait_replicating(gw, "alpha")
        try:
            yield gw
        finally:  # a failed test leaves no request open: the gateway can stop
            for held in HeldRequest.opened:
                held.writer.close()
            HeldRequest.opened.clear()


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f}s: {what}")
        await asyncio.sleep(0.02)


async def gateway_cli(gw: Edge, *args: str) -> tuple[int, str]:
    """The real CLI, as its own process; returns its exit code and its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--data-dir", str(gw.config.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=CLI_BOUND)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"`gateway {' '.join(args)}` still ran after {CLI_BOUND}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode()


class HeldRequest:
    """A write to the team's instance whose body is not all sent: in flight until finish().

    The body is larger than the gateway's retry buffer (64 KiB), so the gateway connects to
    the instance and streams what it has; Datasette's canned query reads the whole form first.
    """

    opened: list[HeldRequest] = []

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rest: bytes
    ) -> None:
        self.reader, self.writer, self.rest = reader, writer, rest
        HeldRequest.opened.append(self)

    @classmethod
    async def open(cls, gw: Edge, target: Target, token: str, uid: str) -> HeldRequest:
        body = urlencode({"uid": uid, "body": "x" * 200_000}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.config.port)
        head = (
            f"POST /data/add_event?_json=1 HTTP/1.1\r\nHost: alpha.{gw.config.domain}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:100_000])
        await writer.drain()
        reached = asyncio.ensure_future(
            until(lambda: target.inflight > 0, "the held request reached the instance")
        )
        answered = asyncio.ensure_future(reader.readline())  # an early answer: a refusal
        await asyncio.wait([reached, answered], return_when=asyncio.FIRST_COMPLETED)
        if answered.done():
            reached.cancel()
            raise AssertionError(f"the held request was answered: {answered.result()!r}")
        answered.cancel()
        await reached
        return cls(reader, writer, body[100_000:])

    async def finish(self) -> bytes:
        self.writer.write(self.rest)
        await self.writer.drain()
        status = await asyncio.wait_for(self.reader.readline(), timeout=60)
        self.writer.close()
        assert status.startswith(b"HTTP/1.1 200"), status  # the held write was applied
        return status


def restoring(gw: Edge) -> bool:
    """The restore has paused the team (its first step after its checks)."""
    service = gw.app.fleet.service("alpha")
    return service is not None and service.state() == "paused"


def deploying(gw: Edge) -> bool:
    """The deploy has started its new instance."""
    return any(i.role == "candidate" for i in gw.app.store.instances("alpha"))


def only_target(gw: Edge) -> Target:
    service = gw.app.fleet.service("alpha")
    assert service is not None
    (target,) = service.targets()
    return target


def one_line_error(output: str, expected: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], output


async def test_a_restore_refuses_a_deploy_a_delete_and_a_second_restore(edge: Edge) -> None:
    gw = edge
    token = team_token(gw, "alpha")
    await post_rows(gw, "alpha", token, [f"r{i}" for i in range(5)])
    await gw.app.backups.sync_now(["alpha"])
    held = await HeldRequest.open(gw, only_target(gw), token, "held")
    restore = asyncio.ensure_future(gateway_cli(gw, "restore", "--team", "alpha"))
    await until(lambda: restoring(gw), "the restore began")

    code, out = await gateway_cli(gw, "deploy", "--team", "alpha")
    assert code == 1
    one_line_error(out, BUSY_RESTORE)
    code, out = await gateway_cli(gw, "restore", "--team", "alpha")
    assert code == 1
    one_line_error(out, BUSY_RESTORE)
    code, out = await gateway_cli(gw, "teams", "delete", "alpha", "--yes")
    assert code == 1
    one_line_error(out, BUSY_RESTORE)
    assert gw.app.store.team("alpha").state == "active"  # the refused delete wrote nothing
    async with gw.admin() as client:
        r = await client.post("/api/deploy", json={"team": "alpha"})
        assert r.status_code == 409 and BUSY_RESTORE in r.json()["detail"], r.text
        r = await client.post("/api/teams/alpha/restore", json={})
        assert r.status_code == 409 and BUSY_RESTORE in r.json()["detail"], r.text
    assert not restore.done()  # all of the above happened while the restore held the team

    await held.finish()
    code, out = await restore
    assert code == 0 and "restored alpha to latest" in out, out
    assert gw.app.fleet.operations == {}
    # The write held across the restore's drain was applied first, so "latest" has it.
    assert uids(gw.config.teams_dir / "alpha" / "data.db") == [*(f"r{i}" for i in range(5)), "held"]
    # Free again: the refusals came from the restore's hold, not from anything left behind.
    code, out = await gateway_cli(gw, "deploy", "--team", "alpha")
    assert code == 0, out


async def test_a_deploy_refuses_a_restore(edge: Edge) -> None:
    gw = edge
    old = only_target(gw)
    held = await HeldRequest.open(gw, old, team_token(gw, "alpha"), "held")
    deploy = asyncio.ensure_future(gateway_cli(gw, "deploy", "--team", "alpha"))
    await until(lambda: deploying(gw), "the deploy began")

    code, out = await gateway_cli(gw, "restore", "--team", "alpha")
    assert code == 1
    one_line_error(out, "team alpha is being deployed right now")
    code, out = await gateway_cli(gw, "teams", "delete", "alpha", "--yes")
    assert code == 1
    one_line_error(out, "team alpha is being deployed right now")
    assert not deploy.done()

    await held.finish()
    code, out = await deploy
    assert code == 0 and "ok" in out, out
    assert only_target(gw) is not old
    code, out = await gateway_cli(gw, "restore", "--team", "alpha")
    assert code == 0, out


async def test_a_delete_written_mid_restore_waits_for_it(edge: Edge) -> None:
    """The CLI's check passed just before the restore began: the delete is in the store, and
    the gateway carries it out only once the restore has finished (never mid-swap)."""
    gw = edge
    held = await HeldRequest.open(gw, only_target(gw), team_token(gw, "alpha"), "held")
    restore = asyncio.ensure_future(gateway_cli(gw, "restore", "--team", "alpha"))
    await until(lambda: restoring(gw), "the restore began")
    gw.app.store.set_team_state("alpha", "deleting")  # what `gateway teams delete` writes
    await gw.app.fleet.reconcile()
    assert gw.app.fleet.service("alpha") is not None  # not removed under the restore
    await held.finish()
    code, out = await restore
    assert code == 0, out
    slugs = lambda: {t.slug for t in gw.app.store.teams()}  # noqa: E731
    await until(lambda: "alpha" not in slugs(), "the delete went ahead after the restore")
    assert gw.app.fleet.service("alpha") is None


async def test_an_import_confirmed_mid_restore_lands_in_the_restored_file(edge: Edge) -> None:
    gw = edge
    member = await sign_in(cast(Any, gw))
    token = team_token(gw, "alpha")
    await post_rows(gw, "alpha", token, ["kept1", "kept2"])
    await gw.app.backups.sync_now(["alpha"])
    point = datetime.now(UTC)
    await until(lambda: datetime.now(UTC).second != point.second, "the next second")
    await post_rows(gw, "alpha", token, ["undone"])  # after the point: the restore drops it
    await gw.app.backups.sync_now(["alpha"])
    job = await ready(member, b"name,n\nZoe,1\nAli,2\n", "people.csv")

    held = await HeldRequest.open(gw, only_target(gw), token, "held")
    restore = asyncio.ensure_future(
        gateway_cli(gw, "restore", "--team", "alpha", "--at", point.isoformat())
    )
    await until(lambda: restoring(gw), "the restore began")
    async with member.browser() as c:
        r = await c.post(job["page"], data={"action": "import", "table": "people", "mode": "new"},
                         headers={"accept": "text/html"})  # fmt: skip
    assert r.status_code == 303, r.text
    lock = gw.config.teams_dir / "alpha" / ".spool" / "data.db.import-lock"
    await until(lambda: waits_on_flock(lock), "the import worker waits on the team's lock")
    assert (await member.wait(job, ("queued",)))["state"] == "queued"  # not run, not failed

    await held.finish()
    code, out = await restore
    assert code == 0, out
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done", done
    db = gw.config.teams_dir / "alpha" / "data.db"
    assert uids(db) == ["kept1", "kept2"]  # restored to the point
    assert people(db) == [("Zoe", 1), ("Ali", 2)]  # and the import applied to that file, once
    aside = re.search(r"the previous file is in (\S+)", out)
    assert aside is not None, out
    with sqlite3.connect(Path(aside.group(1)) / "data.db") as conn:  # the old file: no import
        assert conn.execute("select 1 from sqlite_master where name = 'people'").fetchall() == []


async def ready(member: Member, content: bytes, filename: str) -> dict[str, Any]:
    r = await member.post(content, filename)
    assert r.status_code == 202, r.text
    return await member.wait(r.json()["jobs"][0], ("ready",))


def people(db: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(r[0], r[1]) for r in conn.execute("select name, n from people order by rowid")]
    finally:
        conn.close()


def waits_on_flock(path: Path) -> bool:
    """Someone is blocked waiting for the flock on ``path`` (``/proc/locks`` marks such a
    waiter with ``->``)."""
    if not path.exists():
        return False  # nobody took the lock yet
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        waiter = "->" in fields and fields[fields.index("->") + 1] == "FLOCK"
        if waiter and fields[-3].endswith(f":{inode}"):
            return True
    return False
