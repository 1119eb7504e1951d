"""Handing Traefik's ports to a new process under load: naive reusePort vs gateway edge upgrade.

    .venv/bin/python benchmarks/edge_upgrade.py [--rounds 3]

Each round: the real gateway (in this process) behind the production Traefik (as derived by
tests/traefik_harness.py), TLS load from tests/traefik_load.py (3 fresh-connection workers and
3 keep-alive workers on HTTPS, 1 fresh worker on the HTTP redirect), then a handover:

    naive    a second Traefik on the same ports (reusePort) is started, its /ping awaited,
             then the first gets SIGTERM (the procedure in /work/shared/reference/traefik.md)
    upgrade  gateway.edge.upgrade (steered reuseport group, routers awaited on the new API)

Rounds alternate between the two. Prints, per mode, answers, failed requests by kind and
keep-alive GETs resent after a close before any byte (RFC 9112 9.3.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.config import Config  # noqa: E402
from gateway.edge import traefik_config  # noqa: E402
from gateway.edge.upgrade import Plan, reserve_port, upgrade  # noqa: E402
from gateway.tls import make_dev_certs  # noqa: E402
from tests import traefik_harness as harness  # noqa: E402
from tests import traefik_load as load  # noqa: E402
from tests.edge import run_edge  # noqa: E402


def naive(old: harness.Traefik, work: Path) -> subprocess.Popen[bytes]:
    static = traefik_config.load_static(old.static_path)
    held = reserve_port()  # the API entrypoint has reusePort: Traefik joins the held port
    api = int(held.getsockname()[1])
    static = traefik_config.with_api(static, api)
    static["ping"] = {"entryPoint": traefik_config.API_ENTRYPOINT}
    path = work / "naive.yml"
    traefik_config.write(static, path)
    log = (work / "naive.log").open("ab")
    proc = subprocess.Popen(
        [str(harness.traefik_binary()), f"--configFile={path}"], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{api}/ping", timeout=1).status_code == 200:
                break
        time.sleep(0.02)
    held.close()
    old.proc.send_signal(signal.SIGTERM)
    return proc


async def one_round(mode: str, tmp: Path) -> dict[str, load.Tally]:
    ports = harness.Ports.free()
    certs = make_dev_certs("example.org", tmp / "certs")
    config = Config(data_dir=tmp / "data", domain="example.org")
    async with run_edge(harness.gateway_config(config, ports)) as gw:
        old = await asyncio.to_thread(
            harness.start_for_gateway, gw.config.port, certs, tmp / "traefik", ports
        )
        tls = ssl.create_default_context(cafile=str(certs.ca))
        https = load.Target(ports.websecure, "example.org", "/-/gateway/livez", 200, tls)
        http = load.Target(ports.web, "alpha.example.org", "/x", 301, None)
        stop = asyncio.Event()
        workers = [(https, "fresh", 3), (https, "keepalive", 3), (http, "fresh", 1)]
        running = asyncio.create_task(load.run(workers, stop, limit=120))
        await asyncio.sleep(1.5)
        if mode == "naive":
            new = await asyncio.to_thread(naive, old, tmp)
        else:
            plan = Plan(harness.traefik_binary(), old.static_path, old.proc.pid, tmp / "up")
            new = (await asyncio.to_thread(upgrade, plan)).process
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        stop.set()
        tallies = await running
        try:  # bounded: the old process may wait for a connection up to its graceTimeOut
            await asyncio.to_thread(old.proc.wait, 15)
            print(f"  old Traefik exited {time.monotonic() - t0:.1f} s after the handover")
        except subprocess.TimeoutExpired:
            print("  old Traefik still running 15 s after the load stopped: killed")
            old.proc.kill()
            await asyncio.to_thread(old.proc.wait, 5)
        new.terminate()
        await asyncio.to_thread(new.wait, 30)
    names = {f"fresh {ports.websecure}": "https fresh", f"keepalive {ports.websecure}": "https ka"}
    return {names.get(k, "http fresh"): t for k, t in tallies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (alternating)")
    args = parser.parse_args()
    totals: dict[str, dict[str, Counter[str]]] = {}
    for i in range(args.rounds * 2):
        mode = ("naive", "upgrade")[i % 2]
        with tempfile.TemporaryDirectory(prefix="edge-upgrade-") as tmp:
            tallies = asyncio.run(one_round(mode, Path(tmp)))
        for name, tally in tallies.items():
            row = totals.setdefault(mode, {}).setdefault(name, Counter())
            row["ok"] += tally.ok
            row["resent"] += tally.resent
            for failure, n in tally.failures.items():
                row[failure] += n
        print(
            f"round {i + 1} {mode}: "
            + ", ".join(
                f"{k}: {t.ok} ok, {t.failed} failed {dict(t.failures)}, {t.resent} resent"
                for k, t in tallies.items()
            ),
            flush=True,
        )
    print(f"\n{'mode':<8} {'workers':<12} {'answers':>8} {'failed':>7} {'resent':>7}  failures")
    for mode, rows in totals.items():
        for kind, c in rows.items():
            fails = {k: v for k, v in c.items() if k not in ("ok", "resent")}
            print(
                f"{mode:<8} {kind:<12} {c['ok']:>8} {sum(fails.values()):>7} {c['resent']:>7}  "
                f"{fails or ''}"
            )


if __name__ == "__main__":
    main()
