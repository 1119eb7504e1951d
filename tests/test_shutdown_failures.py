"""A gateway whose lifespan shutdown fails is reported by the test helpers, not swallowed
(tests/shutdown.py): shutdown is where instances stop and drains happen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import Config
from gateway.http.protocol import GatewayHttpProtocol
from gateway.runtimes.static import StaticRuntime
from tests.conftest import free_socket
from tests.shutdown import ShutdownFailed, stop_server


class FailingClose(StaticRuntime):
    async def close(self) -> None:
        raise RuntimeError("the runtime could not stop its instances")


async def serve(
    config: Config, runtime: StaticRuntime
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    sock = free_socket()
    app = create_app(config.replace(port=sock.getsockname()[1]), runtime=runtime)
    server = uvicorn.Server(
        uvicorn.Config(
            app, lifespan="on", log_level="critical", loop="none", http=GatewayHttpProtocol
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    return server, task


async def test_a_failing_lifespan_shutdown_fails_the_test(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", domain="localhost")
    server, task = await serve(config, FailingClose({}))
    with pytest.raises(ShutdownFailed, match="lifespan shutdown failed"):
        await stop_server(server, task, 30)


async def test_a_clean_shutdown_passes(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", domain="localhost")
    server, task = await serve(config, StaticRuntime({}))
    await stop_server(server, task, 30)
    assert task.done() and task.exception() is None
