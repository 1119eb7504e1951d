"""The control store: versioned, idempotent migrations and the team/instance records."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.errors import TeamExists, TeamNotFound
from gateway.store import open_store
from gateway.store.db import connect
from gateway.store.migrations import MIGRATIONS, migrate


def versions(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def schema(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_migrations_are_numbered_in_order() -> None:
    numbers = [v for v, _ in MIGRATIONS]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    assert numbers[0] == 1


def test_migrate_records_every_version_and_is_idempotent(tmp_path: Path) -> None:
    conn = connect(tmp_path / "control.db")
    latest = MIGRATIONS[-1][0]
    assert migrate(conn) == latest
    assert versions(conn) == [v for v, _ in MIGRATIONS]
    before = schema(conn)
    assert migrate(conn) == latest  # a second run changes nothing and fails nothing
    assert schema(conn) == before
    assert versions(conn) == [v for v, _ in MIGRATIONS]
    conn.close()


def test_an_old_store_is_upgraded_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "control.db"
    import gateway.store.migrations as m

    monkeypatch.setattr(m, "MIGRATIONS", MIGRATIONS[:1])  # the store as the first release left it
    store = open_store(path)
    # It really is the old store: only the first migration ran (a patch that did not reach
    # open_store would make this test upgrade nothing).
    assert versions(store.conn) == [MIGRATIONS[0][0]]
    store.create_team("alpha")
    store.close()
    monkeypatch.undo()
    store = open_store(path)
    assert versions(store.conn) == [v for v, _ in MIGRATIONS]
    assert [t.slug for t in store.teams()] == ["alpha"]  # data kept across the upgrade
    store.close()


def test_concurrent_first_opens_do_not_collide(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_store(path).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    conn = connect(path)
    assert versions(conn) == [v for v, _ in MIGRATIONS]
    conn.close()


def test_teams_and_instances(tmp_path: Path) -> None:
    store = open_store(tmp_path / "control.db")
    store.create_team("alpha")
    with pytest.raises(TeamExists, match="already exists"):
        store.create_team("alpha")
    with pytest.raises(TeamNotFound):
        store.team("beta")
    inst = store.add_instance("alpha", "local", version="v1")
    assert inst.id.startswith("alpha-")
    store.update_instance(inst.id, port=8123)
    assert store.instances("alpha")[0].port == 8123
    with pytest.raises(ValueError):
        store.update_instance(inst.id, team="beta")
    store.record_target(inst.id, "127.0.0.1:8123", "starting")
    store.record_target(inst.id, "127.0.0.1:8123", "healthy")
    assert [(r["instance_id"], r["state"]) for r in store.targets()] == [(inst.id, "healthy")]
    store.set_team_state("alpha", "deleting")
    assert store.team("alpha").state == "deleting"
    store.delete_team("alpha")
    assert store.teams() == [] and store.instances() == [] and store.targets() == []
    store.close()


def test_data_version_sees_another_connections_writes(tmp_path: Path) -> None:
    gateway_side = open_store(tmp_path / "control.db")
    cli_side = open_store(tmp_path / "control.db")
    before = gateway_side.data_version()
    cli_side.create_team("alpha")
    assert gateway_side.data_version() != before
    assert [t.slug for t in gateway_side.teams()] == ["alpha"]
    gateway_side.close()
    cli_side.close()


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path / "control.db")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT INTO teams (slug, created_at) VALUES ('half', 0)")
        raise RuntimeError("boom")
    assert store.teams() == []
    store.close()


def test_ensure_setting_is_stable(tmp_path: Path) -> None:
    store = open_store(tmp_path / "control.db")
    first = store.ensure_setting("gateway_id")
    assert store.ensure_setting("gateway_id") == first
    store.close()
    again = open_store(tmp_path / "control.db")
    assert again.ensure_setting("gateway_id") == first
    again.close()
