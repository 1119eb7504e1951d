"""The dashboard of a team with 1,000 tables, against a team with one table (the baseline).

    .venv/bin/python benchmarks/dashboard.py            # --tables 1000 --rows 50 --rounds 15

One in-process gateway (no server: the time is the page's own work), two signed-in users, one
per team. Interleaved rounds time GET /dashboard for each: ``cold`` after emptying the
inventory cache (row counts and dbstat sizes read from data.db), ``warm`` with it (nothing
changed since: two stat calls). Prints median milliseconds, the ratio to the baseline, and the
page size.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import create_app
from gateway.auth.accounts import add_member, create_user
from gateway.config import Config


def fill(db: Path, tables: int, rows: int) -> None:
    with sqlite3.connect(db) as conn:
        for i in range(tables):
            conn.execute(f"CREATE TABLE t{i:04d} (id INTEGER PRIMARY KEY, name TEXT, n REAL)")
            conn.executemany(
                f"INSERT INTO t{i:04d} (name, n) VALUES (?, ?)",
                [(f"row {j}", j * 1.5) for j in range(rows)],
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=Path(tmp), domain="localhost")
        gw = create_app(config)
        cookies = {}
        for slug, tables in (("base", 1), ("many", args.tables)):
            gw.store.create_team(slug)
            (config.teams_dir / slug).mkdir(parents=True, exist_ok=True)
            fill(config.teams_dir / slug / "data.db", tables, args.rows)
            user = create_user(gw.store, f"{slug}@example.org", "not-a-real-hash")
            add_member(gw.store, slug, user.id, "owner")
            cookies[slug] = gw.auth.sessions.create(user.id)[0]
        gw.auth.changed()
        times: dict[tuple[str, str], list[float]] = {}
        sizes: dict[str, int] = {}
        transport = httpx.ASGITransport(app=gw)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            for _ in range(args.rounds):
                for slug in ("base", "many"):
                    headers = {"cookie": f"{gw.auth.cookie_name}={cookies[slug]}"}
                    for kind in ("cold", "warm"):
                        if kind == "cold":
                            gw.upload.inventories = type(gw.upload.inventories)()
                        start = time.perf_counter()
                        r = await c.get("/dashboard", headers=headers)
                        times.setdefault((slug, kind), []).append(time.perf_counter() - start)
                        assert r.status_code == 200, r.text[:200]
                        sizes[slug] = len(r.content)
        print(f"{args.rounds} interleaved rounds; {args.tables} tables x {args.rows} rows")
        for kind in ("cold", "warm"):
            base = statistics.median(times[("base", kind)]) * 1000
            many = statistics.median(times[("many", kind)]) * 1000
            print(
                f"{kind}: 1 table {base:7.1f} ms   {args.tables} tables {many:7.1f} ms   "
                f"ratio {many / base:5.1f}x"
            )
        print(f"page: 1 table {sizes['base']:,} bytes, {args.tables} tables {sizes['many']:,}")
        gw.store.close()


if __name__ == "__main__":
    asyncio.run(main())
