"""HTTPS end to end through the real Traefik, on the production configuration.

Traefik runs ``certs/traefik.yml`` + ``certs/dynamic.yml`` as derived by
``tests/traefik_harness.py`` (ports, a ``gateway certs dev`` certificate instead of ACME, the
gateway's port, a loopback API), in front of the real gateway configured from
``certs/gateway.env``. Clients connect to 127.0.0.1 with the production host names
(``example.org``, ``alpha.example.org``) for SNI, Host and certificate checks.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from gateway.config import Config
from gateway.tls import DevCerts, make_dev_certs
from tests import traefik_harness as harness
from tests.edge import Edge, PinnedTransport, run_edge

DOMAIN = "example.org"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Stack:
    gw: Edge
    traefik: harness.Traefik
    certs: DevCerts
    access_log: Path

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca))

    def url(self, path: str = "/", team: str | None = None, scheme: str = "https") -> str:
        host = f"{team}.{DOMAIN}" if team else DOMAIN
        port = self.traefik.ports.websecure if scheme == "https" else self.traefik.ports.web
        return f"{scheme}://{host}:{port}{path}"

    def client(self, source: str = "127.0.0.1", **kw: Any) -> httpx.AsyncClient:
        transport = PinnedTransport(verify=self.tls, local_address=source)
        return httpx.AsyncClient(transport=transport, **{"timeout": 60, **kw})


@pytest.fixture
async def stack(config: Config, tmp_path: Path) -> AsyncIterator[Stack]:
    ports = harness.Ports.free()
    certs = make_dev_certs(DOMAIN, tmp_path / "certs")
    access_log = tmp_path / "access.log"
    # Room for the largest upload (1 GiB) in the team's storage quota (tested on its own in
    # tests/test_abuse_limits.py): here the edge is under test, not the quota.
    gw_config = harness.gateway_config(config, ports).replace(
        access_log=str(access_log), team_quota_bytes=4 * 1024**3
    )
    async with run_edge(gw_config) as gw:
        traefik = await asyncio.to_thread(
            harness.start_for_gateway, gw.config.port, certs, tmp_path / "traefik", ports
        )
        try:
            yield Stack(gw, traefik, certs, access_log)
        finally:
            traefik.stop()
        assert traefik.errors() == []


def test_the_production_config_loads_in_traefik(tmp_path: Path) -> None:
    """certs/traefik.yml as written (ACME resolver, DNS-01 with DigitalOcean) with only the
    ports moved and ACME pointed at a CA that cannot be reached: Traefik starts, builds the
    router with the resolver and the wildcard domains, and reports no configuration error."""
    static, _dynamic, _env = harness.production()
    ports = harness.Ports.free()
    static["entryPoints"]["web"]["address"] = f"127.0.0.1:{ports.web}"
    static["entryPoints"]["websecure"]["address"] = f"127.0.0.1:{ports.websecure}"
    acme = static["certificatesResolvers"]["letsencrypt"]["acme"]
    nobody, ca_port = harness.refused_port()
    acme["caServer"] = f"https://127.0.0.1:{ca_port}/directory"  # nobody there
    acme["storage"] = str(tmp_path / "acme.json")
    static["accessLog"]["filePath"] = str(tmp_path / "access.log")  # not /var/log here
    static["providers"]["file"]["filename"] = str(harness.CERTS / "dynamic.yml")
    static = harness.traefik_config.with_api(static, ports.api)
    env = {"DO_AUTH_TOKEN": "dummy-token-for-the-test"}
    traefik = harness.start(static, ports, tmp_path, env=env)
    try:
        routers = {r["name"]: r for r in httpx.get(f"{traefik.api_url}/api/http/routers").json()}
        gateway = routers["gateway@file"]
        assert gateway["status"] == "enabled" and gateway["entryPoints"] == ["websecure"]
        assert gateway["tls"]["certResolver"] == "letsencrypt"
        assert gateway["tls"]["domains"] == [{"main": DOMAIN, "sans": [f"*.{DOMAIN}"]}]
        assert routers["web-to-websecure@internal"]["status"] == "enabled"
        raw = httpx.get(f"{traefik.api_url}/api/rawdata").json()
        assert raw["services"]["gateway@file"]["status"] == "enabled"
        assert "gateway-retry@file" in raw["middlewares"]
        # The only errors allowed are ACME's: the CA cannot be reached here.
        assert traefik.proc.poll() is None
        assert [e for e in traefik.errors() if "acme" not in e.lower()] == []
    finally:
        nobody.close()
        assert traefik.stop() == 0


async def test_http_redirects_to_https_for_apex_and_teams(stack: Stack) -> None:
    async with httpx.AsyncClient(transport=PinnedTransport()) as client:
        for team in (None, "alpha"):
            r = await client.get(stack.url("/some/path?q=1", team, scheme="http"))
            assert r.status_code == 301
            assert r.headers["location"] == stack.url("/some/path?q=1", team)


def _peer_certificate(port: int, host: str, tls: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        tls.wrap_socket(raw, server_hostname=host) as conn,  # verifies chain and host name
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_the_wildcard_certificate_serves_apex_and_team_hosts(stack: Stack) -> None:
    for host in (DOMAIN, f"alpha.{DOMAIN}", f"another-team.{DOMAIN}"):
        cert = await asyncio.to_thread(
            _peer_certificate, stack.traefik.ports.websecure, host, stack.tls
        )
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {DOMAIN, f"*.{DOMAIN}"}
    async with stack.client() as client:
        r = await client.get(stack.url("/-/gateway/livez"))
        assert r.status_code == 200
        r = await client.get(stack.url("/", "alpha"))  # no such team: the gateway says so
        assert r.status_code == 404 and "x-request-id" not in r.headers


async def _form(
    client: httpx.AsyncClient,
    stack: Stack,
    path: str,
    fields: dict[str, str],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a form as a browser does: the page's CSRF token, its anonymous CSRF cookie (sent
    by hand: PinnedTransport connects to 127.0.0.1, which httpx's jar would file it under)."""
    page = await client.get(stack.url(path))
    token = CSRF.search(page.text)
    assert token, page.text[:300]
    cookie = "; ".join(c.split(";")[0] for c in page.headers.get_list("set-cookie"))
    sent = {"origin": stack.url("").rstrip("/"), "cookie": cookie, **(headers or {})}
    return await client.post(stack.url(path), data={**fields, "csrf_token": token[1]}, headers=sent)


async def _register(client: httpx.AsyncClient, stack: Stack, email: str) -> httpx.Response:
    form = {"email": email, "password": "correct horse battery staple", "team": "alpha"}
    return await _form(client, stack, "/register", form)


async def test_the_session_cookie_is_secure_prefixed(stack: Stack) -> None:
    async with stack.client() as client:
        r = await _register(client, stack, "ann@example.org")
        assert r.status_code == 303, r.text[:300]
        [session] = [c for c in r.headers.get_list("set-cookie") if "gateway_session" in c]
        assert session.startswith("__Secure-gateway_session=")
        attrs = {a.strip().split("=")[0].lower() for a in session.split(";")[1:]}
        assert {"secure", "httponly"} <= attrs
        assert f"domain={DOMAIN}" in session.lower()


async def test_forwarded_for_comes_from_traefik_never_from_the_client(stack: Stack) -> None:
    """A client on 127.0.0.2 sends a forged X-Forwarded-For: Traefik (trusting no client)
    replaces it, the gateway trusts Traefik's (127.0.0.1 is GATEWAY_TRUSTED_PROXIES), and its
    access log and its sign-in throttle both see 127.0.0.2."""
    async with stack.client(source="127.0.0.2") as client:
        r = await client.get(
            stack.url("/-/gateway/livez"), headers={"x-forwarded-for": "203.0.113.66"}
        )
        assert r.status_code == 200
    stack.gw.app.access_log.stream.flush()  # type: ignore[union-attr]
    lines = [json.loads(line) for line in stack.access_log.read_text().splitlines()]
    [line] = [x for x in lines if x["path"] == "/-/gateway/livez"]
    assert line["client"] == "127.0.0.2"

    throttle = stack.gw.app.auth.throttle
    limit = throttle.rules["ip"][0].failures
    async with stack.client(source="127.0.0.2") as attacker:
        for i in range(limit + 1):  # a new account and a new forged address every time
            fields = {"email": f"u{i}@example.org", "password": "nope nope"}
            forged = {"x-forwarded-for": f"198.51.100.{i}"}
            r = await _form(attacker, stack, "/login", fields, forged)
        assert r.status_code == 429, r.status_code
    assert throttle.retry_after("someone@example.org", "127.0.0.2") > 0
    async with stack.client(source="127.0.0.3") as other:
        fields = {"email": "v@example.org", "password": "nope nope"}
        r = await _form(other, stack, "/login", fields)
        assert r.status_code == 400  # another client is not banned


BOUNDARY = "gateway-test-boundary"
LINE = b"123456789,abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxy\n"  # 64 bytes


def _multipart(size: int) -> tuple[bytes, bytes, int]:
    """Head (ending with the CSV's header line) and tail of a one-file form whose body is
    exactly ``size`` bytes, and how many bytes of CSV rows go between them."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"'
        "\r\nContent-Type: text/csv\r\n\r\nid,name\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, size - len(head) - len(tail)


async def _body(size: int, pace: float = 0.0) -> AsyncIterator[bytes]:
    """``size`` bytes of form, in 1 MiB chunks, or 64 KiB every ``pace`` seconds."""
    head, tail, payload = _multipart(size)
    chunk = LINE * (1024 if pace else 16384)
    yield head
    left = payload
    while left > 0:
        piece = chunk[:left]
        left -= len(piece)
        if pace:
            await asyncio.sleep(pace)
        yield piece
    yield tail


def _team_token(stack: Stack) -> str:
    from gateway.auth import accounts
    from gateway.auth.tokens import Tokens

    store = stack.gw.app.store
    store.create_team("alpha")
    user = accounts.create_user(store, "up@example.org", "-")
    accounts.add_member(store, "alpha", user.id, "owner")
    stack.gw.app.auth.changed()
    return Tokens(store).create("alpha", user.id, "upload test")


async def _routed(stack: Stack, team: str) -> None:
    """Until the gateway's watcher has put the new team in its route table."""
    for _ in range(200):
        if stack.gw.app.fleet.service(team) is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway never routed {team}")


async def _upload(stack: Stack, token: str, size: int, pace: float = 0.0) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json",
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "content-length": str(size),
    }
    async with stack.client(timeout=None) as client:
        return await client.post(
            stack.url("/-/upload-csv", "alpha"), content=_body(size, pace), headers=headers
        )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_1_gib_upload_goes_through_traefik_whole(stack: Stack) -> None:
    """The production limit (GATEWAY_UPLOAD_MAX_BYTES, 1 GiB of form) streamed over TLS
    through Traefik's websecure entrypoint to the gateway's spool, nothing cut."""
    size = stack.gw.config.upload_max_bytes
    assert size == 1024**3
    token = _team_token(stack)
    await _routed(stack, "alpha")
    r = await _upload(stack, token, size)
    assert r.status_code == 202, r.text[:300]
    [job] = r.json()["jobs"]
    assert job["size"] == _multipart(size)[2] + len(b"id,name\n")


@pytest.mark.slow
async def test_a_slow_upload_outlasts_a_short_read_timeout_only_with_the_production_one(
    config: Config, tmp_path: Path
) -> None:
    """The check above can fail: the same derived Traefik with websecure's readTimeout cut to
    2 s (Traefik's own default is 60 s) cuts a paced 4 s upload; the production value does
    not. (A paced upload, not 1 GiB: what a timeout cuts is time, not bytes.)"""
    size = 64 * 1024 * 9 + 400
    outcomes = {}
    for read_timeout in ("2s", None):
        ports = harness.Ports.free()
        certs = make_dev_certs(DOMAIN, tmp_path / "certs")
        base = config.replace(data_dir=tmp_path / f"data-{read_timeout}")
        async with run_edge(harness.gateway_config(base, ports)) as gw:
            static, dynamic, _env = harness.production()
            if read_timeout:
                timeouts = static["entryPoints"]["websecure"]["transport"]["respondingTimeouts"]
                timeouts["readTimeout"] = read_timeout
            work = tmp_path / f"traefik-{read_timeout}"
            work.mkdir()
            static, dynamic = harness.derive(
                static,
                dynamic,
                ports=ports,
                gateway_url=f"http://127.0.0.1:{gw.config.port}",
                certs=certs,
                dynamic_path=work / "dynamic.yml",
            )
            harness.traefik_config.write(dynamic, work / "dynamic.yml")
            traefik = await asyncio.to_thread(harness.start, static, ports, work)
            try:
                stack = Stack(gw, traefik, certs, tmp_path / "unused.log")
                try:
                    token = _team_token(stack)
                    await _routed(stack, "alpha")
                    r = await _upload(stack, token, size, pace=0.45)
                    outcomes[read_timeout] = r.status_code
                except httpx.HTTPError as exc:
                    outcomes[read_timeout] = type(exc).__name__
            finally:
                traefik.stop()
    print(outcomes)
    assert outcomes[None] == 202, outcomes
    assert outcomes["2s"] != 202, outcomes


def _closed_connections_to(port: int) -> int:
    """TCP connections to 127.0.0.1:``port`` closed by their client (now in TIME_WAIT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06" and int(fields[2].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


async def test_traefik_keeps_its_connections_to_the_gateway(stack: Stack) -> None:
    """Under concurrent keep-alive load, Traefik reuses its connections to the gateway
    instead of closing one for about every second request (Go's default of 2 idle
    connections per host, on a named serversTransport without maxIdleConnsPerHost)."""
    from tests import traefik_load as load

    target = load.Target(stack.traefik.ports.websecure, DOMAIN, "/-/gateway/livez", 200, stack.tls)
    before = _closed_connections_to(stack.gw.config.port)
    stop = asyncio.Event()
    [tally] = (await load.run([(target, "keepalive", 20)], stop, limit=3.0)).values()
    assert tally.failed == 0 and tally.ok > 100, tally
    closed = _closed_connections_to(stack.gw.config.port) - before
    assert closed < tally.ok / 20, (closed, tally.ok)
