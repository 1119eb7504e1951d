"""The access log is current within a second with no further traffic, keeps no secret (reset,
invitation and handoff tokens, query strings), writes one JSON line per request, and reopens
its file after logrotate moved it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import Config
from tests.conftest import StartGateway
from tests.listen_fds import activated, listening_socket, port_of
from tests.servers import wait_for

SECRETS = ("S3CRET-RESET", "S3CRET-INVITE", "S3CRET-TICKET", "S3CRET-QUERY")
GATEWAY = str(Path(sys.executable).with_name("gateway"))


def lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


async def test_flushed_within_a_second_and_redacted(
    config: Config, start_gateway: StartGateway, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = await start_gateway(config.replace(access_log=str(log)), teams=("alpha",))
    async with gw.client() as client:
        await client.get(gw.url(None, f"/reset/{SECRETS[0]}"))
        await client.get(gw.url(None, f"/invite/{SECRETS[1]}"))
        await client.get(gw.url("alpha", f"/-/gateway/sso?ticket={SECRETS[2]}"))
        await client.get(gw.url("alpha", f"/data.json?_token={SECRETS[3]}"))
        sent = time.monotonic()
    # No further request: the timer alone must flush (generous bound: the machine is shared).
    for _ in range(100):
        if len(lines(log)) >= 4:
            break
        await asyncio.sleep(0.05)
    found = lines(log)
    assert len(found) == 4, found  # one line per request
    assert time.monotonic() - sent < 5
    text = log.read_text()
    for secret in SECRETS:
        assert secret not in text
    assert [e["path"] for e in found[:2]] == ["/reset/<redacted>", "/invite/<redacted>"]


async def test_reopen_after_logrotate(
    config: Config, start_gateway: StartGateway, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = await start_gateway(config.replace(access_log=str(log)))
    async with gw.client() as client:
        await client.get(gw.url(None, "/-/gateway/livez"))
        log.rename(tmp_path / "access.log.1")  # what logrotate does, then it sends SIGUSR1
        assert gw.app.access_log is not None
        gw.app.access_log.reopen()
        await client.get(gw.url(None, "/-/gateway/readyz"))
    await wait_for(lambda: log.exists() and bool(lines(log)))  # the flush timer wrote it
    assert [e["path"] for e in lines(tmp_path / "access.log.1")] == ["/-/gateway/livez"]
    assert [e["path"] for e in lines(log)] == ["/-/gateway/readyz"]


def test_sigusr1_reopens_the_file_of_a_running_gateway(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    public = listening_socket()  # passed as LISTEN_FDS: no free-port race
    port = port_of(public)
    args = ["--data-dir", str(data), "--port", str(port), "--admin-port", "0"]
    argv, fds = activated([GATEWAY, "serve", *args, "--access-log", str(log)], public=public)
    with (tmp_path / "serve.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, pass_fds=fds)
    public.close()
    try:
        _get_until_logged(port, log, "/-/gateway/livez")
        log.rename(tmp_path / "access.log.1")
        proc.send_signal(signal.SIGUSR1)
        _get_until_logged(port, log, "/-/gateway/readyz")
    finally:
        proc.terminate()
        proc.wait(60)
    assert proc.returncode == 0  # SIGUSR1 did not end it (the default action would)


def _get_until_logged(port: int, log: Path, path: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}{path}", headers={"host": "localhost"}, timeout=2)
        time.sleep(0.3)
        if any(e["path"] == path for e in lines(log)):
            return
    raise AssertionError(f"{path} never reached {log}")
