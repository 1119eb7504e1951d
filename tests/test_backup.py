"""Continuous replication and restore with real Litestream, real SQLite and real Datasette.

Each test runs the whole gateway (``tests/edge.py``: public and admin listeners, the running
lock) with its Litestream daemon replicating to a file replica beside the data directory
(or to a local S3 server, moto's, when it is installed). Rows are written through the
gateway with a writable canned query and a team API token, or straight into the file when
the test is about the daemon, not the path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from gateway.backup.layout import Layout
from gateway.backup.litestream import BackupError, restore
from gateway.backup.restore import restore_team
from gateway.backup.supervisor import Replication, State
from gateway.cli import cli
from gateway.config import Config
from gateway.errors import TeamBusy
from gateway.runtimes.base import prepare_team_dir
from gateway.store import open_store
from tests.edge import Edge, run_edge
from tests.systemd_gateway import SystemdGateway

pytestmark = pytest.mark.slow

METADATA = {
    "databases": {
        "data": {
            "queries": {
                "add_event": {
                    "sql": "insert into events (uid, body) values (:uid, :body)",
                    "write": True,
                }
            }
        }
    }
}


def prepare(config: Config, slug: str) -> None:
    """A team's volume with an ``events`` table and a writable canned query."""
    db_path = prepare_team_dir(config.teams_dir / slug)
    db = sqlite3.connect(db_path)
    db.execute("create table if not exists events (id integer primary key, uid text, body text)")
    db.commit()
    db.close()
    (config.teams_dir / slug / "metadata.json").write_text(json.dumps(METADATA))


def team_token(gw: Edge, slug: str) -> str:
    from gateway.auth import accounts
    from gateway.auth.tokens import Tokens

    user = accounts.create_user(gw.app.store, f"writer-{slug}@example.org", "-")
    accounts.add_member(gw.app.store, slug, user.id, "owner")
    return Tokens(gw.app.store).create(slug, user.id, "backup test")


async def post_rows(gw: Edge, slug: str, token: str, uids: list[str]) -> None:
    async with gw.client() as client:
        for uid in uids:
            r = await client.post(
                gw.url(slug, "/data/add_event?_json=1"),
                headers={"authorization": f"Bearer {token}"},
                data={"uid": uid, "body": f"row {uid}"},
            )
            assert r.status_code == 200 and r.json().get("ok") is True, r.text


def data_hash(path: Path) -> tuple[dict[str, int], str]:
    """Row counts and a hash of every user table's rows (Litestream's own tables aside)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in db.execute("select name from sqlite_master where type = 'table' order by 1")
            if not r[0].startswith(("sqlite_", "_litestream"))
        ]
        digest = hashlib.sha256()
        counts = {}
        for table in tables:
            rows = db.execute(f"select * from [{table}] order by 1").fetchall()
            counts[table] = len(rows)
            digest.update(repr((table, rows)).encode())
        return counts, digest.hexdigest()
    finally:
        db.close()


def uids(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("select uid from events order by id")]
    finally:
        db.close()


@pytest.fixture(params=["file", "s3"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """'' (the default file replica beside the data dir), or an s3:// URL on moto's server."""
    if request.param == "file":
        yield ""
        return
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()  # bound by the server itself, read back
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # Litestream 0.5.17's S3 client fails to start with AWS_CA_BUNDLE set ("unable to add
    # custom RootCAs"); the server here is plain HTTP on loopback, so no bundle is needed.
    saved = {k: os.environ.get(k) for k in [*env, "AWS_CA_BUNDLE"]}
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.update(env)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="backups"
    )
    try:
        yield f"s3://backups/gw?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bconfig(config: Config) -> Config:
    return config.replace(max_pause=60, deploy_timeout=60)


@pytest.fixture
async def edge(bconfig: Config) -> AsyncIterator[Edge]:
    prepare(bconfig, "alpha")
    async with run_edge(bconfig, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        await wait_replicating(gw, "alpha")
        yield gw


async def wait_replicating(gw: Edge, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = gw.app.backups.statuses.get(name)
        if st is not None and st.state == "replicating" and st.last_sync is not None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} is not replicating: {gw.app.backups.status()}")


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def count_served(gw: Edge, slug: str) -> int:
    async with gw.client() as client:
        r = await client.get(
            gw.url(slug, "/data.json"), params={"sql": "select count(*) from events"}
        )
    assert r.status_code == 200, r.text
    return int(r.json()["rows"][0][0])


# -- the proofs --------------------------------------------------------------------------
async def test_round_trip_restores_the_same_data_after_the_volume_is_lost(
    bconfig: Config, replica: str
) -> None:
    cfg = bconfig.replace(backup_replica=replica)
    prepare(cfg, "alpha")
    async with run_edge(cfg, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        await wait_replicating(gw, "alpha")
        token = team_token(gw, "alpha")
        await post_rows(gw, "alpha", token, [f"u{i}" for i in range(25)])
        db_path = cfg.teams_dir / "alpha" / "data.db"
        before = data_hash(db_path)
        assert before[0]["events"] == 25
        await gw.app.backups.sync_now(["alpha"])

        shutil.rmtree(cfg.teams_dir / "alpha")  # the disk is gone
        result = await restore_team(gw.app, "alpha", None)

        assert data_hash(db_path) == before
        assert await count_served(gw, "alpha") == 25
        async with gw.client() as client:  # Litestream's own tables are hidden from the team
            tables = (await client.get(gw.url("alpha", "/data.json"))).json()["tables"]
        hidden = {t["name"] for t in tables if t["hidden"]}
        assert {"_litestream_seq", "_litestream_lock"} <= hidden, tables
        assert result.aside == ""  # nothing was left to keep aside
        # Replication goes on from the restored file: new writes reach the replica too.
        db = sqlite3.connect(db_path)
        db.execute("insert into events (uid) values ('after')")
        db.commit()
        db.close()
        await gw.app.backups.sync_now(["alpha"])
        out = cfg.data_dir / "check.db"
        alpha = gw.app.backups.layout.team("alpha", gw.app.store.team("alpha").created_at)
        await asyncio.to_thread(restore, alpha.replica, out, None)
        assert uids(out)[-1] == "after" and len(uids(out)) == 26


async def test_point_in_time_brings_back_a_dropped_table(edge: Edge) -> None:
    gw, cfg = edge, edge.config
    token = team_token(gw, "alpha")
    await post_rows(gw, "alpha", token, ["a", "b", "c"])
    await gw.app.backups.sync_now(["alpha"])
    await asyncio.sleep(1.2)  # replica files carry whole seconds
    noted = datetime.now(UTC)
    await asyncio.sleep(1.2)
    db = sqlite3.connect(cfg.teams_dir / "alpha" / "data.db")
    db.execute("drop table events")  # the mistake
    db.commit()
    db.close()
    await gw.app.backups.sync_now(["alpha"])

    result = await restore_team(gw.app, "alpha", noted)

    assert uids(cfg.teams_dir / "alpha" / "data.db") == ["a", "b", "c"]
    assert await count_served(gw, "alpha") == 3
    aside = Path(result.aside)  # the file with the dropped table is kept
    assert (aside / "data.db").exists()
    kept = sqlite3.connect(aside / "data.db")
    assert not kept.execute("select 1 from sqlite_master where name = 'events'").fetchall()
    kept.close()


async def test_kill_9_of_litestream_under_writes_loses_nothing(edge: Edge) -> None:
    gw, cfg = edge, edge.config
    backups = gw.app.backups
    db_path = cfg.teams_dir / "alpha" / "data.db"
    written: list[str] = []
    stop = asyncio.Event()

    async def writer() -> None:
        conn = sqlite3.connect(db_path, timeout=10)
        try:
            for i in range(2000):  # bounded in count and in time (stop)
                if stop.is_set():
                    break
                conn.execute("insert into events (uid) values (?)", [f"w{i}"])
                conn.commit()
                written.append(f"w{i}")
                await asyncio.sleep(0.02)
        finally:
            conn.close()

    task = asyncio.create_task(writer())
    # Writes under way and the daemon running: counted, not a while.
    assert await eventually(lambda: len(written) >= 50 and bool(backups.status()["pid"]))
    pid = backups.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = backups.status()
        if st["restarts"] >= 1 and st["pid"] not in (None, pid) and st["state"] == "running":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"litestream was not restarted: {backups.status()}")
    seen = len(written)  # writes go on against the new daemon
    assert await eventually(lambda: len(written) >= seen + 50)
    stop.set()
    await task
    assert backups.errors >= 1 and "exited" in backups.last_error
    # The lag recovers: a sync completes within a few intervals of the last write.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lag = backups.statuses["alpha"].lag(time.time())
        if lag is not None and lag < 3:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"the lag did not recover: {backups.status()}")
    await backups.sync_now(["alpha"])
    out = cfg.data_dir / "check.db"
    alpha = backups.layout.team("alpha", backups.store.team("alpha").created_at)
    await asyncio.to_thread(restore, alpha.replica, out, None)
    assert uids(out) == written and len(written) > 50


async def test_restore_under_read_load_fails_no_request(edge: Edge) -> None:
    gw = edge
    token = team_token(gw, "alpha")
    await post_rows(gw, "alpha", token, [f"r{i}" for i in range(10)])
    await gw.app.backups.sync_now(["alpha"])
    statuses: list[int | str] = []
    stop = asyncio.Event()

    async def reader() -> None:
        async with gw.client() as client:
            for _ in range(1000):  # bounded in count and in time (stop)
                if stop.is_set():
                    return
                try:
                    r = await client.get(gw.url("alpha", "/data/events.json"))
                    statuses.append(r.status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    assert await eventually(lambda: len(statuses) >= 20)
    served_before = len(statuses)
    result = await restore_team(gw.app, "alpha", None)
    served_during = len(statuses)  # the readers go on against the restored team
    assert await eventually(lambda: len(statuses) >= served_during + 20)
    stop.set()
    await asyncio.gather(*readers)

    assert result.held > 0
    assert served_before > 0 and len(statuses) > served_before
    assert set(statuses) == {200}, {s for s in statuses if s != 200}
    assert await count_served(gw, "alpha") == 10


# -- refusals and edges ------------------------------------------------------------------------
async def test_points_the_replica_cannot_give_back_are_refused_clearly(edge: Edge) -> None:
    gw = edge
    created = gw.app.store.team("alpha").created_at
    before = datetime.fromtimestamp(created, UTC) - timedelta(minutes=5)
    with pytest.raises(BackupError, match="did not exist at"):
        await restore_team(gw.app, "alpha", before)
    with pytest.raises(BackupError, match="in the future"):
        await restore_team(gw.app, "alpha", datetime.now(UTC) + timedelta(hours=1))
    # A refused restore changed nothing: the team serves as before.
    assert gw.app.fleet.require("alpha").state() == "up"
    assert await count_served(gw, "alpha") == 0
    # Through the admin API: a clear 400, never a 500.
    async with gw.admin() as admin:
        r = await admin.post("/api/teams/alpha/restore", json={"at": before.isoformat()})
        assert r.status_code == 400 and "did not exist" in r.json()["detail"], r.text
        r = await admin.post("/api/teams/alpha/restore", json={"at": "yesterday"})
        assert r.status_code == 400 and "not a time" in r.json()["detail"], r.text
        r = await admin.post("/api/teams/ghost/restore", json={})
        assert r.status_code in (400, 404), r.text
    # An import under way writes the file itself: a restore waits for it to end.
    jobs = gw.app.upload.jobs
    job = jobs.create(job_id="j-backup", team="alpha", user_id=None, filename="x.csv",
                      spool_path="/nonexistent", size=1, auto=True, options={})  # fmt: skip
    with pytest.raises(TeamBusy, match="an import into alpha is under way"):  # API: 409
        await restore_team(gw.app, "alpha", None)
    jobs.fail(job.id, "a test's stand-in")
    # A team older than its history (retention dropped the start): the point is refused too.
    # Its replica is one per team lifetime (named by the creation time): it moves along.
    from gateway.backup.layout import file_path, lifetime

    root = file_path(gw.app.backups.layout.root)
    assert root is not None
    lives = root / "teams" / "alpha"
    (lives / lifetime(created)).rename(lives / lifetime(created - 7200))
    with gw.app.store.transaction() as conn:
        conn.execute("UPDATE teams SET created_at = ? WHERE slug = 'alpha'", [created - 7200])
    with pytest.raises(BackupError, match="before the oldest restorable point"):
        await restore_team(gw.app, "alpha", datetime.now(UTC) - timedelta(hours=1))


async def test_control_restore_needs_the_gateway_stopped(edge: Edge) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["restore", "--control", "--data-dir", str(edge.config.data_dir)],
    )
    assert result.exit_code == 1
    assert "stop the gateway first" in result.output


async def test_status_and_metrics_show_lag_last_sync_and_the_daemon(edge: Edge) -> None:
    gw = edge
    async with gw.admin() as admin:
        status = (await admin.get("/api/backups")).json()
        metrics = (await admin.get("/metrics")).text
        page = await admin.get("/")
    names = {d["name"]: d for d in status["databases"]}
    assert status["state"] == "running" and status["pid"]
    assert names["alpha"]["state"] == "replicating" and names["alpha"]["lag"] is not None
    assert names["control"]["state"] == "replicating"
    assert 'gateway_backup_lag_seconds{database="alpha"}' in metrics
    assert 'gateway_backup_last_sync_timestamp_seconds{database="control"}' in metrics
    assert "gateway_backup_up 1.0" in metrics
    assert "Backups" in page.text
    # `gateway backup status` through the admin API, with the oldest restorable point.
    out = await asyncio.to_thread(
        CliRunner().invoke, cli, ["backup", "status", "--data-dir", str(gw.config.data_dir)]
    )
    assert out.exit_code == 0, out.output
    assert "litestream: running" in out.output
    assert "alpha" in out.output and "oldest 20" in out.output


async def test_new_and_deleted_teams_start_and_stop_replicating(edge: Edge) -> None:
    gw, cfg = edge, edge.config
    prepare(cfg, "beta")
    gw.app.store.create_team("beta")
    beta = gw.app.backups.layout.team("beta", gw.app.store.team("beta").created_at)
    await wait_replicating(gw, "beta")
    db = sqlite3.connect(cfg.teams_dir / "beta" / "data.db")
    db.execute("insert into events (uid) values ('last words')")
    db.commit()
    db.close()
    # The real CLI, against the running gateway: drain, delete, then remove the files.
    out = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["teams", "delete", "beta", "--yes", "--purge", "--data-dir", str(cfg.data_dir)],
    )
    assert out.exit_code == 0, out.output
    assert not (cfg.teams_dir / "beta").exists()
    assert "beta" not in gw.app.backups.statuses
    registered = gw.app.backups.control.databases()
    assert str(cfg.teams_dir / "beta" / "data.db") not in registered
    # Its replica stays, is listed, and has the last write made before the delete.
    layout = gw.app.backups.layout
    assert (Path(layout.root.removeprefix("file://")) / "teams" / "beta").is_dir()
    out = await asyncio.to_thread(
        CliRunner().invoke, cli, ["backup", "status", "--data-dir", str(cfg.data_dir)]
    )
    assert "(beta " in out.output, out.output
    check = cfg.data_dir / "beta-check.db"
    await asyncio.to_thread(restore, beta.replica, check, None)
    assert uids(check) == ["last words"]
    # A new team under the deleted one's name gets a replica of its own: it never writes
    # into the old one, and its restore never brings the deleted team's rows back.
    prepare(cfg, "beta")
    gw.app.store.create_team("beta")
    again = gw.app.backups.layout.team("beta", gw.app.store.team("beta").created_at)
    assert again.replica != beta.replica
    await wait_replicating(gw, "beta")
    await gw.app.backups.sync_now(["beta"])
    fresh = cfg.data_dir / "beta-again.db"
    await asyncio.to_thread(restore, again.replica, fresh, None)
    assert uids(fresh) == []
    old = cfg.data_dir / "beta-old.db"
    await asyncio.to_thread(restore, beta.replica, old, None)
    assert uids(old) == ["last words"]


async def test_teams_registered_at_run_time_are_synced_by_the_gateway(bconfig: Config) -> None:
    """Litestream 0.5.17 gives a database registered through its control socket its own 1 s
    monitor and sync intervals, whatever the config says: the gateway syncs such databases
    itself (the Nudger) every backup_sync_interval when their WAL changed. A team in the
    config file gets the intervals there (monitor-interval included); a successor gateway that
    adopts the daemon keeps nudging the teams registered before it."""
    cfg = bconfig.replace(backup_sync_interval=0.2)
    prepare(cfg, "alpha")
    async with run_edge(cfg, teams=("alpha",)) as gw:
        backups = gw.app.backups
        await wait_replicating(gw, "alpha")
        daemon = json.loads(backups.layout.config_file.read_text())
        (alpha_conf,) = [d for d in daemon["dbs"] if d["path"].endswith("alpha/data.db")]
        assert alpha_conf["monitor-interval"] == "250ms"
        assert alpha_conf["replica"]["sync-interval"] == "200ms"
        alpha_path = str(cfg.teams_dir / "alpha" / "data.db")
        assert alpha_path not in backups._runtime  # in the config file: Litestream's timers

        prepare(cfg, "beta")
        gw.app.store.create_team("beta")  # after the daemon started: registered at run time
        await wait_replicating(gw, "beta")
        beta_path = cfg.teams_dir / "beta" / "data.db"
        assert str(beta_path) in backups._runtime
        assert json.loads(backups.layout.daemon_file.read_text())["runtime"] == [str(beta_path)]
        before = backups.nudger.synced
        db = sqlite3.connect(beta_path)
        db.execute("insert into events (uid) values ('nudged')")
        db.commit()
        db.close()
        assert await eventually(lambda: backups.nudger.synced > before), "never nudged"
        beta = backups.layout.team("beta", gw.app.store.team("beta").created_at)
        check = cfg.data_dir / "beta-check.db"
        await asyncio.to_thread(restore, beta.replica, check, None)
        assert uids(check) == ["nudged"]
        # Unchanged WAL, no sync: an idle team costs one stat per interval.
        from gateway.backup.litestream import Nudger

        own = Nudger(backups.control)
        assert own.nudge([beta_path]) == 1  # first look: unknown, so synced
        assert await eventually(lambda: own.nudge([beta_path]) == 0)

        successor = Replication(cfg, gw.app.store)  # what `gateway restart` starts
        await successor.start()
        try:
            assert successor._runtime == {str(beta_path)}
        finally:
            await successor.close()


async def test_a_successor_gateway_adopts_the_daemon_with_no_gap(bconfig: Config) -> None:
    """`gateway restart`: the new gateway takes the running daemon over; the old one's
    shutdown leaves it running (the same pid replicates throughout)."""
    prepare(bconfig, "alpha")
    store = open_store(bconfig.control_db)
    store.create_team("alpha")
    old, new = Replication(bconfig, store), Replication(bconfig, store)
    await old.start()
    try:
        pid = old.status()["pid"]
        await new.start()
        assert new.status()["pid"] == pid and new.state is State.RUNNING
        await old.close()
        assert new.daemon_alive()
        assert new.control.databases()  # still answering, still replicating
    finally:
        await new.close()
    assert not new.daemon_alive()


async def test_offline_restore_of_a_team_and_of_the_control_store(bconfig: Config) -> None:
    """With the gateway stopped (its shutdown stops the daemon after a last sync), the CLI
    restores a lost team volume and a lost control store."""
    cfg = bconfig
    prepare(cfg, "alpha")
    async with run_edge(cfg, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        await wait_replicating(gw, "alpha")
        await wait_replicating(gw, "control")
        await post_rows(gw, "alpha", team_token(gw, "alpha"), ["x", "y"])
    assert not Replication(cfg, open_store(cfg.control_db)).daemon_alive()
    before = data_hash(cfg.teams_dir / "alpha" / "data.db")
    runner = CliRunner()
    flags = ["--data-dir", str(cfg.data_dir)]

    for name in ("data.db", "data.db-wal", "data.db-shm"):
        (cfg.teams_dir / "alpha" / name).unlink(missing_ok=True)
    out = runner.invoke(cli, ["restore", "--team", "alpha", *flags])
    assert out.exit_code == 0, out.output
    assert data_hash(cfg.teams_dir / "alpha" / "data.db") == before

    for name in ("control.db", "control.db-wal", "control.db-shm"):
        (cfg.data_dir / name).unlink(missing_ok=True)
    out = runner.invoke(cli, ["restore", "--control", *flags])
    assert out.exit_code == 0, out.output
    store = open_store(cfg.control_db)
    assert [t.slug for t in store.teams()] == ["alpha"]
    assert store.query("select count(*) from users")[0][0] == 1
    store.close()

    out = runner.invoke(cli, ["restore", "--team", "ghost", *flags])
    assert out.exit_code == 1 and "there is no team 'ghost'" in out.output, out.output
    out = runner.invoke(cli, ["restore", *flags])
    assert out.exit_code == 2 and "exactly one of" in out.output


def test_layout_builds_replica_urls_for_paths_and_s3(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path / "data")
    layout = Layout(cfg)
    alpha = layout.team("alpha", 1767225600.25)  # one replica per team lifetime
    assert alpha.replica == (tmp_path / "backups").as_uri() + "/teams/alpha/1767225600250000"
    s3 = Layout(cfg.replace(backup_replica="s3://b/p?endpoint=http://h:9&forcePathStyle=true"))
    assert s3.control().replica == "s3://b/p/control?endpoint=http://h:9&forcePathStyle=true"
    assert not Layout(cfg.replace(backup_replica="off")).enabled
    with pytest.raises(Exception, match="unknown scheme"):
        Layout(cfg.replace(backup_replica="ftp://x"))


def test_gateway_restart_hands_the_daemon_over_and_stop_ends_it(tmp_path: Path) -> None:
    """A real `gateway serve`, then `gateway restart`: the successor adopts the same Litestream
    process (no gap), which keeps syncing; stopping the last gateway stops it."""
    from gateway.backup.supervisor import process_alive

    gw = SystemdGateway(tmp_path / "data")  # its sockets bound by the test, as systemd would
    created = gw.cli("teams", "create", "alpha")
    assert created.returncode == 0, created.stdout + created.stderr
    daemon_file = gw.data_dir / "litestream" / "daemon.json"
    gw.start()
    try:
        deadline = time.monotonic() + 60
        while not daemon_file.exists():
            assert gw.proc is not None and gw.proc.poll() is None, gw.log()[-3000:]
            assert time.monotonic() < deadline, gw.log()[-3000:]
            time.sleep(0.1)
        first = json.loads(daemon_file.read_text())
        # The daemon is registered with both databases before we restart.
        ok = gw.cli("backup", "now")
        assert ok.returncode == 0 and "alpha" in ok.stdout, ok.stdout + ok.stderr
        out = gw.cli("restart", timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        assert gw.published_pid() not in (None, gw.pid)
        assert gw.proc is not None
        gw.proc.wait(60)  # the old gateway drained and exited...
        after = json.loads(daemon_file.read_text())
        assert after["pid"] == first["pid"] and after["owner"] != first["owner"]
        assert process_alive(first["pid"])  # ...and left the daemon running for its successor
        ok = gw.cli("backup", "now", "--team", "alpha")
        assert ok.returncode == 0 and "alpha" in ok.stdout, ok.stdout + ok.stderr
    finally:
        gw.stop()  # SIGTERM to the gateway and its successor; waits for both
    deadline = time.monotonic() + 40
    while process_alive(first["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(first["pid"]), "the last gateway's shutdown did not stop Litestream"


@pytest.mark.docker
async def test_a_docker_team_is_replicated_from_the_host_and_restored(
    config: Config, docker_image: str
) -> None:
    """The docker runtime: the host-side file in the team's bind-mounted volume is replicated;
    a restore swaps it under a fresh container, owned by the container's user."""
    import docker

    cfg = config.replace(runtime="docker", max_pause=60, deploy_timeout=120)
    try:
        async with run_edge(cfg, teams=("alpha",)) as gw:
            await gw.wait_healthy("alpha", timeout=120)
            await wait_replicating(gw, "alpha")
            db_path = cfg.teams_dir / "alpha" / "data.db"
            db = sqlite3.connect(db_path)
            db.execute("create table events (id integer primary key, uid text)")
            db.executemany("insert into events (uid) values (?)", [[f"d{i}"] for i in range(7)])
            db.commit()
            db.close()
            await gw.app.backups.sync_now(["alpha"])
            for name in ("data.db", "data.db-wal", "data.db-shm"):
                (cfg.teams_dir / "alpha" / name).unlink(missing_ok=True)

            await restore_team(gw.app, "alpha", None)

            assert await count_served(gw, "alpha") == 7
            assert db_path.stat().st_uid == db_path.parent.stat().st_uid
    finally:
        client = docker.from_env()
        gateway_id = open_store(cfg.control_db).ensure_setting("gateway_id")
        for c in client.containers.list(
            all=True, filters={"label": f"gateway.managed-by={gateway_id}"}
        ):
            c.remove(force=True, v=True)
        client.close()


async def test_backup_replica_off_runs_no_daemon_and_says_so(config: Config) -> None:
    cfg = config.replace(backup_replica="off")
    store = open_store(cfg.control_db)
    replication = Replication(cfg, store)
    await replication.start()
    try:
        assert replication.status()["state"] == "off" and replication.status()["pid"] is None
        assert not cfg.data_dir.joinpath("litestream").exists()
        with pytest.raises(BackupError, match="backups are off"):
            await replication.sync_now()
    finally:
        await replication.close()
        store.close()
    out = CliRunner().invoke(cli, ["backup", "status", "--data-dir", str(cfg.data_dir),
                                   "--backup-replica", "off"])  # fmt: skip
    assert out.exit_code == 1 and "backups are off" in out.output


def test_a_failed_swap_puts_the_old_files_back(tmp_path: Path) -> None:
    from gateway.backup.restore import swap_in

    layout = Layout(Config(data_dir=tmp_path / "data"))
    db = layout.team("alpha", time.time())
    prepare_team_dir(db.path.parent)
    sqlite3.connect(db.path).execute("create table kept (x)").connection.close()
    Path(str(db.path) + "-wal").write_bytes(b"wal")
    with pytest.raises(FileNotFoundError):
        swap_in(layout, db, tmp_path / "no-such-staging.db")  # the rename in fails
    assert Path(str(db.path) + "-wal").read_bytes() == b"wal"
    kept = sqlite3.connect(db.path)
    assert kept.execute("select name from sqlite_master").fetchall() == [("kept",)]
    kept.close()


def test_the_daemon_ends_when_its_gateway_is_killed_with_9(tmp_path: Path) -> None:
    """No Litestream outlives every gateway: a gateway killed with -9 frees its lock, and the
    daemon's watchdog ends it (a successor, had there been one, would have adopted it)."""
    import subprocess
    import sys

    from gateway.backup.supervisor import process_alive

    script = (
        "import asyncio, sys\n"
        "from gateway.backup.supervisor import Replication\n"
        "from gateway.config import Config\n"
        "from gateway.store import open_store\n"
        "async def main():\n"
        "    cfg = Config(data_dir=sys.argv[1])\n"
        "    r = Replication(cfg, open_store(cfg.control_db))\n"
        "    await r.start()\n"
        "    print(r.status()['pid'], flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "data")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    daemon = int(proc.stdout.readline())
    time.sleep(2)
    assert process_alive(daemon)  # its gateway lives: it runs
    proc.kill()
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 30
    while process_alive(daemon) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(daemon), "Litestream outlived its gateway"
