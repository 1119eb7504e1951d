"""Versioned schema migrations. Append only: never edit a migration that has shipped.

``schema_version`` records which ran, so a newer gateway upgrades an older store in place and
later features add their tables safely. Each step runs in its own IMMEDIATE transaction, which
also serialises a CLI and a gateway that open a fresh store at the same moment.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE teams (
            slug TEXT PRIMARY KEY,
            state TEXT NOT NULL DEFAULT 'active',      -- active | deleting
            public INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            team TEXT NOT NULL REFERENCES teams(slug),
            runtime TEXT NOT NULL,                     -- local | docker
            version TEXT NOT NULL DEFAULT '',          -- image tag or datasette version
            port INTEGER,                              -- last port the instance listened on
            ref TEXT NOT NULL DEFAULT '',              -- pid or container id
            role TEXT NOT NULL DEFAULT 'active',       -- active | candidate | retired
            created_at REAL NOT NULL
        );
        CREATE INDEX instances_team ON instances(team);
        CREATE TABLE targets (
            instance_id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            state TEXT NOT NULL,  -- starting | healthy | unhealthy | draining | stopped
            updated_at REAL NOT NULL
        );
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    ),
    (
        2,
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
        CREATE TABLE memberships (
            team TEXT NOT NULL REFERENCES teams(slug),
            user_id TEXT NOT NULL REFERENCES users(id),
            role TEXT NOT NULL DEFAULT 'member',       -- owner | member
            created_at REAL NOT NULL,
            PRIMARY KEY (team, user_id)
        );
        CREATE INDEX memberships_user ON memberships(user_id);
        CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY,                  -- sha256 of the id in the cookie
            user_id TEXT NOT NULL REFERENCES users(id),
            created_at REAL NOT NULL,
            last_seen REAL NOT NULL,
            expires_at REAL NOT NULL,                  -- absolute timeout
            idle REAL NOT NULL,                        -- idle timeout, seconds
            remember INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX sessions_user ON sessions(user_id);
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            team TEXT NOT NULL,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            token_hash TEXT NOT NULL UNIQUE,           -- sha256 of the bearer token
            created_at REAL NOT NULL,
            expires_at REAL,
            last_used REAL,
            revoked_at REAL
        );
        CREATE TABLE invites (
            id TEXT PRIMARY KEY,
            team TEXT NOT NULL,
            created_by TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT 'member',
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL,
            used_by TEXT
        );
        """,
    ),
    (
        3,
        """
        -- CSV import jobs live here, never in the team's own database (gateway/upload/).
        CREATE TABLE import_jobs (
            id TEXT PRIMARY KEY,
            team TEXT NOT NULL,
            user_id TEXT,
            filename TEXT NOT NULL,                    -- sanitised display name only
            spool_path TEXT NOT NULL,
            size INTEGER NOT NULL,
            state TEXT NOT NULL,   -- analyzing | ready | queued | importing | done | failed
            auto INTEGER NOT NULL DEFAULT 0,           -- import straight after analysis
            bytes_done INTEGER NOT NULL DEFAULT 0,
            rows_done INTEGER NOT NULL DEFAULT 0,
            options TEXT NOT NULL DEFAULT '{}',        -- JSON: what the user chose
            analysis TEXT,                             -- JSON: detected encoding, types, preview
            result TEXT,                               -- JSON: table, rows, ragged lines
            error TEXT,
            pid INTEGER,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX import_jobs_team ON import_jobs(team, created_at);
        """,
    ),
    (
        5,
        """
        CREATE TABLE deploys (
            id INTEGER PRIMARY KEY,
            team TEXT NOT NULL,
            rollout TEXT,                              -- set for `deploy --all`
            from_version TEXT NOT NULL DEFAULT '',
            to_version TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,                      -- running | succeeded | failed
            reason TEXT NOT NULL DEFAULT '',
            drained INTEGER NOT NULL DEFAULT 0,
            cancelled INTEGER NOT NULL DEFAULT 0,
            started_at REAL NOT NULL,
            finished_at REAL
        );
        CREATE INDEX deploys_team ON deploys(team, id);
        CREATE INDEX deploys_rollout ON deploys(rollout);
        ALTER TABLE teams ADD COLUMN maintenance TEXT;
        """,
    ),
    (
        13,
        """
        -- Tenant integrity: a deleted team's volume is archived under a name no
        -- slug maps to; operators are a role granted in the store, not an email string.
        CREATE TABLE archived_teams (
            name TEXT PRIMARY KEY,                     -- directory under <data_dir>/archive
            slug TEXT NOT NULL,
            deleted_at REAL NOT NULL
        );
        ALTER TABLE users ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;
        -- 1 for accounts an operator created (CLI); self-registered addresses are unverified.
        ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        17,
        """
        -- Idle teams sleep: remembered across restarts; a team's own idle timeout
        -- (seconds, 0 = never) overrides the gateway's when set.
        ALTER TABLE teams ADD COLUMN sleeping INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE teams ADD COLUMN idle_timeout REAL;
        """,
    ),
]


def migrate(conn: sqlite3.Connection) -> int:
    """Run every migration not yet applied, in version order. Returns the highest applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
    for version, sql in sorted(MIGRATIONS, key=lambda m: m[0]):
        conn.execute("BEGIN IMMEDIATE")
        try:
            applied = conn.execute(
                "SELECT 1 FROM schema_version WHERE version = ?", [version]
            ).fetchone()
            if not applied:
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def _statements(sql: str) -> list[str]:
    # executescript() would COMMIT our transaction, so split on complete statements instead.
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
