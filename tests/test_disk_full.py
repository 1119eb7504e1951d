"""A full disk is a state, not a crash: on a small real tmpfs, sign-in answers the out-of-space
page (507, Retry-After), never 500; /readyz and /metrics say the space is low; reads keep
working; everything recovers once space is freed. Mounting needs root (as CI runs)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.config import Config
from tests.auth_support import PASSWORD, Browser, browsers, make_user
from tests.conftest import Running, StartGateway
from tests.test_metrics_events import one, scrape

__all__ = ["browsers"]
Make = Callable[[Running], Browser]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(vol)], check=True)
    try:
        yield vol
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=True)


def fill(path: Path) -> None:
    """Write until the file system says it is full (ENOSPC)."""
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError):  # the last partial block, if the close needs room
        os.truncate(path, path.stat().st_size)


async def test_sign_in_on_a_full_disk_is_507_and_recovers(
    config: Config, start_gateway: StartGateway, browsers: Make, small_volume: Path
) -> None:
    cfg = config.replace(data_dir=small_volume / "data", min_free_mb=2)
    gw = await start_gateway(cfg)
    make_user(gw, "ann@example.org", {})
    async with gw.client() as client:
        assert (await client.get(gw.url(None, "/-/gateway/readyz"))).status_code == 200
    assert one(scrape(gw.app), "gateway_data_dir_low_space") == 0
    assert one(scrape(gw.app), "gateway_data_dir_free_bytes") > 2 * 1024 * 1024

    b = browsers(gw)
    token = await b.token("/login")  # the form is read while there is room (reads work anyway)
    filler = small_volume / "filler"
    fill(filler)
    r = await b.post(
        "/login", {"email": "ann@example.org", "password": PASSWORD, "csrf_token": token}
    )
    assert r.status_code == 507, (r.status_code, r.text[:300])
    assert "out of storage space" in r.text and r.headers["retry-after"] == "60"
    async with gw.client() as client:
        ready = await client.get(gw.url(None, "/-/gateway/readyz"))
        home = await client.get(gw.url(None, "/login"))
    assert ready.status_code == 503 and "below --min-free-mb" in ready.json()["problem"]
    assert home.status_code == 200  # reads keep working
    assert one(scrape(gw.app), "gateway_data_dir_low_space") == 1

    filler.unlink()
    async with gw.client() as client:
        assert (await client.get(gw.url(None, "/-/gateway/readyz"))).status_code == 200
    r = await b.post("/login", {"email": "ann@example.org", "password": PASSWORD})
    assert r.status_code == 303, (r.status_code, r.text[:300])  # signed in


def test_an_import_on_a_full_disk_ends_failed_and_leaves_no_spool(
    config: Config, small_volume: Path
) -> None:
    import sys

    from gateway.runtimes.base import prepare_team_dir
    from gateway.store import open_store
    from gateway.upload.jobs import Jobs
    from gateway.upload.runner import Runner

    cfg = config.replace(data_dir=small_volume / "data")
    store = open_store(cfg.control_db)
    store.create_team("alpha")
    team_dir = cfg.teams_dir / "alpha"
    prepare_team_dir(team_dir)
    (team_dir / ".spool").mkdir()
    spool = team_dir / ".spool" / "job1.upload"
    spool.write_text("id,name\n" + "".join(f"{i},row {i}\n" for i in range(2000)))
    jobs = Jobs(store)
    size = spool.stat().st_size
    jobs.create(job_id="job1", team="alpha", user_id=None, filename="t.csv",
                spool_path=str(spool), size=size, auto=True, options={})  # fmt: skip
    filler = small_volume / "filler"
    fill(filler)  # the worker can write neither its progress nor its result
    worker = subprocess.run(
        [sys.executable, "-m", "gateway.upload.worker", str(cfg.control_db), "job1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 1, worker.stderr
    assert not spool.exists()  # removed although the job's record could not be written
    filler.unlink()
    Runner(cfg, store).recover()  # the next start: the job ends, truthfully failed
    job = jobs.get("job1")
    assert job.state == "failed", job
    assert list((team_dir / ".spool").glob("*.upload")) == []
    store.close()
