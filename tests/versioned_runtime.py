"""A test-only runtime whose version can be set per deploy, so rollback and resumed rollouts
have versions that really differ.

It is the local runtime (real Datasette processes) except that each instance serves the
version it was started for: its Datasette's title is ``version <V>`` (``/-/metadata.json``),
so a test sees through the gateway which version answers. New teams start at
``GATEWAY_TEST_VERSION`` (default ``v1``); ``deploy --image V`` starts V.

    python -m tests.versioned_runtime serve ...   # `gateway` with this runtime (for restarts
                                                  # and kills, tests start it as a process)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from gateway.config import Config
from gateway.runtimes.local import PLUGINS_DIR, LocalRuntime
from gateway.store import open_store
from gateway.store.db import Instance, Store

VERSION_ENV = "GATEWAY_TEST_VERSION"


class VersionedRuntime(LocalRuntime):
    # Not "local": the deployer refuses --image on the local runtime (it cannot vary there).
    name = "versioned"

    def version(self) -> str:
        return os.environ.get(VERSION_ENV, "v1")

    async def check_version(self, version: str) -> str:
        return version  # any label: each version is its own metadata title (see _spawn)

    async def running_version(self, instance: Instance) -> str:
        return instance.version

    async def _spawn(self, instance: Instance, port: int) -> asyncio.subprocess.Process:
        team_dir = self.team_dir(instance.team)
        metadata = team_dir / f"version-{instance.version}.json"
        metadata.write_text(json.dumps({"title": f"version {instance.version}"}))
        args = [sys.executable, "-m", "gateway.instance.run", f"--gateway-parent={os.getpid()}"]
        args += ["serve", str(team_dir / "data.db")]
        args += ["--host", "127.0.0.1", "--port", str(port), "--plugins-dir", str(PLUGINS_DIR)]
        args += ["--metadata", str(metadata)]
        env = {**os.environ, "DATASETTE_SECRET": self.secret_for(instance.team)}
        with open(team_dir / "datasette.log", "ab") as logfile:  # noqa: ASYNC230
            return await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env=env,
                cwd=str(team_dir),
            )


def versioned_runtime(config: Config) -> VersionedRuntime:
    """The runtime with its own connection to the control store (SQLite allows several)."""
    store: Store = open_store(config.control_db)
    return VersionedRuntime(
        config, store, lambda team: store.ensure_setting(f"instance_secret:{team}")
    )


def main() -> None:
    """`gateway` whose apps get this runtime (the only change: gateway.server's create_app)."""
    from gateway import server
    from gateway.cli import main as gateway_main

    real = server.create_app

    def create_app(config: Config, **kw: Any) -> Any:
        return real(config, runtime=kw.get("runtime") or versioned_runtime(config))

    server.create_app = create_app  # type: ignore[assignment]
    gateway_main()


if __name__ == "__main__":
    main()
