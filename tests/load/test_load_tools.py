"""locust and ab, as a user runs them (the exact lines `python -m tests.load.prep` prints),
against a real gateway with a deploy in the middle: each reports 0 failures itself."""

from __future__ import annotations

import asyncio
import csv
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.load.prep import commands
from tests.load.scenario import TEAMS, cli, prepare, start_gateway, wait_ready
from tests.systemd_gateway import listening_socket

pytestmark = pytest.mark.slow


def events(data_dir: Path) -> int:
    total = 0
    for team in TEAMS:
        db = sqlite3.connect(data_dir / "teams" / team / "data.db")
        total += db.execute("select count(*) from events").fetchone()[0]
        db.close()
    return total


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    public = listening_socket()  # bound here and passed on: no free-port-then-bind race
    data_dir, port = tmp_path / "data", public.getsockname()[1]
    tokens = prepare(data_dir, port)
    proc = start_gateway(data_dir, public, tmp_path / "gateway.log")
    try:
        await wait_ready(data_dir, port)
        yield data_dir, commands(data_dir, port, tokens)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, (tmp_path / "gateway.log").read_text()


@pytest.mark.timeout(600)
async def test_locust_reports_no_failure_across_a_deploy(
    gateway: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    data_dir, lines = gateway
    port = int(lines["locust"].split("PORT=")[1].split()[0])
    # -t is only a bound: locust is stopped (SIGTERM: it writes its report and exits with its
    # verdict) once the deploy is done and more POSTs went in. A fixed window could end
    # before a deploy on a busy machine did.
    line = lines["locust"].replace("-t 60s", "-t 300s")
    line += f" --csv {tmp_path / 'locust'} --only-summary --exit-code-on-error 1"
    locust = subprocess.Popen(  # noqa: ASYNC220 (it only forks and execs)
        ["bash", "-c", line], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        seeded = events(data_dir)
        deadline = asyncio.get_running_loop().time() + 60
        while events(data_dir) < seeded + 20:  # its POSTs are being applied: load is flowing
            assert locust.poll() is None, locust.communicate()[0]
            assert asyncio.get_running_loop().time() < deadline, "locust sent no POST"
            await asyncio.sleep(0.1)
        deploy = await asyncio.to_thread(cli, data_dir, port, "deploy", "--all")
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert locust.poll() is None, "the load ended before the deploy did"
        after_deploy = events(data_dir)
        deadline = asyncio.get_running_loop().time() + 60
        while events(data_dir) < after_deploy + 20:  # the load goes on after the deploy
            assert locust.poll() is None, locust.communicate()[0]
            assert asyncio.get_running_loop().time() < deadline, "no POST after the deploy"
            await asyncio.sleep(0.1)
        locust.send_signal(signal.SIGTERM)  # bash execs locust: this is locust itself
        out, _ = await asyncio.to_thread(locust.communicate, timeout=180)
    finally:
        if locust.poll() is None:
            locust.kill()
    report = out.decode(errors="replace")
    assert locust.returncode == 0, report
    with (tmp_path / "locust_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0, report
    assert int(total["Request Count"]) > 100, report
    assert {"html", "json", "sql", "post"} <= set(rows), rows.keys()
    assert events(data_dir) > after_deploy  # and it went on after the deploy


@pytest.mark.timeout(600)
async def test_ab_reports_no_failure_across_deploys(gateway: tuple[Path, dict[str, str]]) -> None:
    _, lines = gateway
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", f"DEPLOYS=2 {lines['ab']}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed 0, non-2xx 0, deploys 2" in done.stdout, done.stdout
