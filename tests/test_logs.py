"""Logs tell the truth in one format: timestamp and PID on every line (uvicorn's too), the
process's lifecycle lines once (not once per listener), adopted containers ``detached`` rather
than ``stopped``, and another gateway's containers on a shared engine not warned about."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.config import Config
from gateway.runtimes.docker.labels import build_snapshot
from tests.conftest import StartGateway
from tests.listen_fds import activated, listening_socket, port_of
from tests.servers import UvicornUpstream, gateway_for
from tests.test_labels import DOMAIN, GW, container

GATEWAY = str(Path(sys.executable).with_name("gateway"))
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) (DEBUG|INFO|WARNING|ERROR) \S+: ")


def test_one_format_with_pid_and_each_lifecycle_line_once(tmp_path: Path) -> None:
    public = listening_socket()  # passed as LISTEN_FDS: no free-port race
    port = port_of(public)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    log = tmp_path / "serve.log"
    serve = [GATEWAY, "serve", "--data-dir", str(tmp_path / "d"), "--port", str(port)]
    argv, fds = activated([*serve, "--admin-port", "0"], public=public)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, pass_fds=fds)
    public.close()
    try:
        deadline = time.monotonic() + 60
        while True:  # its lifecycle lines are checked once it has served: ready, then stopped
            assert time.monotonic() < deadline, "the gateway never became ready"
            assert proc.poll() is None, "the gateway exited during startup"
            try:
                url = f"http://127.0.0.1:{port}/-/gateway/readyz"
                r = httpx.get(url, headers={"host": "localhost"}, timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    lines = log.read_text().splitlines()
    assert lines, "no log at all"
    for line in lines:
        match = LINE.match(line)
        assert match, line
        assert int(match[1]) == proc.pid
    text = "\n".join(lines)
    for once in ("Started server process", "Shutting down", "Finished server process"):
        assert text.count(once) == 1, (once, text)


async def test_adopted_instances_are_detached_not_stopped(
    config: Config, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    up = await UvicornUpstream().start()
    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [up.address]})
        with caplog.at_level(logging.INFO, logger="gateway.target"):
            await gw.app.fleet.close()  # what shutdown does; the instance keeps running
        assert "healthy -> detached (its instance keeps running)" in caplog.text
        assert "-> stopped" not in caplog.text
    finally:
        await up.close()


def test_another_gateways_container_is_not_a_forgery() -> None:
    theirs = container("c1", managed_by="another-gateway")  # named gateway-<its instance>
    forged = {**container("c2", managed_by="another-gateway"), "Names": ["/h3-forged"]}
    snap = build_snapshot([theirs, forged], GW, DOMAIN)
    by_id = {r.container: r for r in snap.rejected}
    assert by_id["c1"].other_gateway and not by_id["c1"].forged
    assert by_id["c2"].forged and not by_id["c2"].other_gateway
