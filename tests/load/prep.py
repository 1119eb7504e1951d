"""Prepare a gateway's data directory for locust and ab, and print their exact command lines.

    python -m tests.load.prep --data-dir load-data --port 8000

It creates the load teams (as tests/load/scenario.py does): each with an ``events`` table, the
writable canned query ``add_event`` that the POSTs need, and an API token. Then start the
gateway with the printed ``gateway serve`` line and run the printed locust or ab line; run
``gateway deploy --all`` or ``gateway restart`` meanwhile: both must report 0 failures.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tests.load.scenario import TEAMS, prepare

ROOT = Path(__file__).resolve().parent.parent.parent


def commands(data_dir: Path, port: int, tokens: dict[str, str]) -> dict[str, str]:
    """The exact command lines, for the reader and for tests/load/test_load_tools.py."""
    gateway = str(Path(sys.executable).with_name("gateway"))
    locust = str(Path(sys.executable).with_name("locust"))
    team = TEAMS[0]
    teams = ",".join(f"{t}:{tokens[t]}" for t in TEAMS)
    locust_args = [locust, "-f", str(ROOT / "tests/load/locustfile.py"), "--headless"]
    locust_args += ["-u", "20", "-r", "10", "-t", "60s", "--host", f"http://127.0.0.1:{port}"]
    return {
        "serve": shlex.join([gateway, "serve", "--data-dir", str(data_dir), "--port", str(port)]),
        "locust": f"LOAD_TEAMS={teams} PORT={port} {shlex.join(locust_args)}",
        "ab": f"TEAM={team} TOKEN={tokens[team]} PORT={port} DATA_DIR={shlex.quote(str(data_dir))}"
        f" GATEWAY={shlex.quote(gateway)} {shlex.quote(str(ROOT / 'tests/load/ab.sh'))} 30 10",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a new data directory")
    parser.add_argument("--port", type=int, default=8000, help="the gateway's public port")
    args = parser.parse_args()
    if (args.data_dir / "control.db").exists():
        raise SystemExit(f"{args.data_dir} already has a control store; give a new directory")
    tokens = prepare(args.data_dir, args.port)
    lines = commands(args.data_dir.resolve(), args.port, tokens)
    print(f"prepared teams {', '.join(TEAMS)} in {args.data_dir}")
    print(f"\n# 1. the gateway\n{lines['serve']}")
    print(f"\n# 2. locust (headless; its failure table must stay empty)\n{lines['locust']}")
    print(f"\n# 3. or ab (with deploys in the middle; exit 1 on any failure)\n{lines['ab']}")


if __name__ == "__main__":
    main()
