"""Run one real gateway for the benchmark, with the production uvicorn settings.

    python benchmarks/serve_gateway.py --data-dir DIR --port PORT --team bench [--static H:P]

With ``--static`` the team is routed to a fixed address (``StaticRuntime``), the tiny upstream;
without it the team runs on the embedded local runtime: a real, supervised Datasette serving
``DIR/teams/<team>``. ``--tls-acme-store acme.json`` serves TLS as ``gateway serve`` does with
that setting. ``--server granian`` runs the same app under granian instead (only to
measure whether it would help; granian is not a dependency).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from gateway import acme_store
from gateway.app import Gateway, create_app
from gateway.auth.accounts import set_public
from gateway.config import Config
from gateway.runtimes.static import StaticRuntime
from gateway.server import uvicorn_config


def build(
    data_dir: Path,
    port: int,
    team: str,
    static: str | list[str],
    tls_acme_store: str = "",
    trusted_proxies: str = "",
) -> Gateway:
    config = Config(
        data_dir=data_dir,
        port=port,
        domain="localhost",
        log_level="warning",
        tls_acme_store=tls_acme_store,
        trusted_proxies=trusted_proxies,
        # Replication as in production unless a benchmark turns it off ("off").
        backup_replica=os.environ.get("GATEWAY_BACKUP_REPLICA", ""),
    )
    if tls_acme_store:
        acme_store.prepare(config)  # as `gateway serve` does before its listener starts
    runtime = None
    routes = {}
    for spec in [static] if isinstance(static, str) and static else static or []:
        # [TEAM=]HOST:PORT; without TEAM=, the --team.
        slug, _, address = spec.rpartition("=")
        host, _, upstream_port = address.rpartition(":")
        routes[slug or team] = (host, int(upstream_port))
    if routes:
        runtime = StaticRuntime(routes)
    app = create_app(config, runtime=runtime)
    for slug in routes or [team]:
        if not any(t.slug == slug for t in app.store.teams()):
            app.store.create_team(slug)
        _make_public(app, slug)
    return app


def _make_public(app: Gateway, team: str) -> None:
    """wrk is anonymous: a public team serves it read-only, through the whole auth check."""
    set_public(app.store, team, True)


def granian_app() -> Gateway:
    """Factory for granian, which imports the app in its worker: arguments come by env."""
    env = os.environ
    return build(
        Path(env["BENCH_DATA_DIR"]),
        int(env["BENCH_PORT"]),
        env["BENCH_TEAM"],
        [s for s in env.get("BENCH_STATIC", "").split(",") if s],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--team", default="bench")
    parser.add_argument(
        "--static",
        action="append",
        default=[],
        help="[TEAM=]HOST:PORT of a team's fixed upstream (repeat for more teams)",
    )
    parser.add_argument(
        "--tls-acme-store", default="", help="serve TLS with the certificate in this acme.json"
    )
    parser.add_argument("--trusted-proxies", default="", help="as the gateway's setting")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    args = parser.parse_args()
    if args.server == "granian":
        from granian import Granian  # type: ignore[import-not-found,unused-ignore]

        os.environ.update(
            BENCH_DATA_DIR=str(args.data_dir),
            BENCH_PORT=str(args.port),
            BENCH_TEAM=args.team,
            BENCH_STATIC=",".join(args.static),
        )
        Granian(
            "serve_gateway:granian_app",
            address="127.0.0.1",
            port=args.port,
            interface="asgi",
            loop="uvloop",
            workers=1,
            factory=True,
            log_access=False,
        ).serve()
        return
    app = build(
        args.data_dir, args.port, args.team, args.static, args.tls_acme_store, args.trusted_proxies
    )
    uvicorn.Server(uvicorn_config(app, app.config)).run()


if __name__ == "__main__":
    main()
