"""The gateway serving TLS with the certificate from Traefik's ACME store (``tls_acme_store``).

The store is a real ``acme.json`` in the layout Traefik's ``LocalStore`` writes, with
certificates from ``gateway certs dev``'s CA (tests/acme_support.py: an ACME CA cannot be
reached from here, and that is the only stand-in). Everything else is real: ``gateway serve`` as a
process, TLS handshakes over loopback, keep-alive connections that live through the renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from gateway.acme_store import AcmeWatcher, prepare, read_store
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.tls import DevCerts, client_context, make_dev_certs
from tests import acme_support
from tests.acme_support import entry, lego_key, store_json, write_in_place
from tests.listen_fds import activated, listening_socket, port_of

DOMAIN = "example.test"
GATEWAY = str(Path(sys.executable).with_name("gateway"))


def issue(tmp: Path) -> tuple[DevCerts, bytes, bytes, int]:
    return acme_support.issue(DOMAIN, tmp)


def test_reads_traefiks_layout_and_picks_the_wildcard_with_the_latest_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.tls.LEAF_DAYS", 30)  # the certificate about to be renewed
    _, old_chain, old_key, old_serial = issue(tmp_path / "ca")
    monkeypatch.setattr("gateway.tls.LEAF_DAYS", 90)
    _, chain, key, serial = issue(tmp_path / "ca")
    other = make_dev_certs("other.test", tmp_path / "other")
    store = tmp_path / "acme.json"
    write_in_place(
        store,
        store_json(
            {
                "letsencrypt": [
                    entry("other.test", ["*.other.test"], other.cert.read_bytes(), lego_key(other)),
                    entry(DOMAIN, [f"*.{DOMAIN}"], chain, key),
                    entry(DOMAIN, [f"*.{DOMAIN}"], old_chain, old_key),
                    {"domain": {"main": DOMAIN}, "certificate": "", "key": ""},  # skipped
                ],
                "staging": [],
            }
        ),
    )
    got = read_store(store, DOMAIN)
    assert (got.serial, got.chain, got.key) == (serial, chain, key)
    assert got.serial != old_serial
    assert got.names == {DOMAIN, f"*.{DOMAIN}"} and got.resolver == "letsencrypt"
    assert read_store(store, "other.test").names == {"other.test", "*.other.test"}
    assert read_store(store, DOMAIN, "letsencrypt").serial == serial
    with pytest.raises(ConfigError, match=r"no resolver 'zerossl'.*letsencrypt, staging"):
        read_store(store, DOMAIN, "zerossl")
    with pytest.raises(ConfigError, match=r"no certificate for both nope\.test and \*\.nope"):
        read_store(store, "nope.test")


def test_a_renewal_written_before_the_watcher_starts_is_loaded(tmp_path: Path) -> None:
    """The store changes between start-up's prepare() and the watcher's start (the listeners
    start in between): the watcher's first look loads it, and later looks do nothing."""
    _, chain, key, first = issue(tmp_path / "ca")
    store = tmp_path / "acme.json"
    write_in_place(store, store_json({"letsencrypt": [entry(DOMAIN, [f"*.{DOMAIN}"], chain, key)]}))
    config = Config(domain=DOMAIN, data_dir=tmp_path / "data", tls_acme_store=str(store))
    files = prepare(config)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    _, new_chain, new_key, second = issue(tmp_path / "ca")
    write_in_place(
        store, store_json({"letsencrypt": [entry(DOMAIN, [f"*.{DOMAIN}"], new_chain, new_key)]})
    )
    watcher = AcmeWatcher(config, context)
    assert watcher.check() is True
    assert x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number == second
    assert watcher.check() is False and watcher.reloads == 1
    assert second != first


def test_store_errors_are_one_line(tmp_path: Path) -> None:
    store = tmp_path / "acme.json"
    with pytest.raises(ConfigError, match="cannot read the ACME store"):
        read_store(store, DOMAIN)
    write_in_place(store, b'{"letsencrypt": {"Certificates": [')  # caught mid-write
    with pytest.raises(ConfigError, match="is not JSON"):
        read_store(store, DOMAIN)
    write_in_place(store, store_json({"le": []}))  # the resolver has not obtained one yet
    with pytest.raises(ConfigError, match="no certificates"):
        read_store(store, DOMAIN)
    certs = make_dev_certs(DOMAIN, tmp_path / "ca")
    with pytest.raises(ConfigError, match="not both"):
        Config(tls_acme_store=str(store), tls_cert=str(certs.cert), tls_key=str(certs.key))
    assert Config(tls_acme_store=str(store)).tls
    with pytest.raises(ConfigError, match="--tls-acme-interval must be a positive number"):
        Config(tls_acme_store=str(store), tls_acme_interval=0)


async def handshake_serial(port: int, ctx: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=DOMAIN)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        writer.close()


class KeepAlive:
    """One TLS connection sending requests back to back, counting answers and failures."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port, self.ctx = port, ctx
        self.ok = 0
        self.failures: list[str] = []
        self.serial = -1
        self.request = f"GET /-/gateway/livez HTTP/1.1\r\nHost: {DOMAIN}:{port}\r\n\r\n".encode()

    async def run(self, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.ctx, server_hostname=DOMAIN
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.serial = x509.load_der_x509_certificate(der).serial_number
        try:
            while not stop.is_set():
                writer.write(self.request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    self.failures.append(head.split(b"\r\n", 1)[0].decode())
                self.ok += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.failures.append(repr(exc))
        finally:
            writer.close()


async def answered(clients: list[KeepAlive], at_least: int) -> None:
    """Until the connections' answers total ``at_least`` (bounded): load counted, not a while."""
    deadline = time.monotonic() + 60
    while sum(c.ok for c in clients) < at_least:
        assert not any(c.failures for c in clients), [c.failures for c in clients]
        assert time.monotonic() < deadline, "the keep-alive load stalled"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_renewal_under_keepalive_load_drops_nothing(tmp_path: Path) -> None:
    certs, chain, key, first = issue(tmp_path / "ca")
    store = tmp_path / "traefik" / "acme.json"
    store.parent.mkdir()
    write_in_place(store, store_json({"letsencrypt": [entry(DOMAIN, [f"*.{DOMAIN}"], chain, key)]}))
    public = listening_socket()  # passed as LISTEN_FDS: no free-port race
    port = port_of(public)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    log_path = tmp_path / "gateway.log"
    serve = [GATEWAY, "serve", "--domain", DOMAIN, "--port", str(port), "--admin-port", "0"]
    serve += ["--data-dir", str(tmp_path / "data"), "--tls-acme-store", str(store)]
    argv, fds = activated([*serve, "--tls-acme-interval", "0.1"], public=public)
    with open(log_path, "wb") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            pass_fds=fds,
        )
    public.close()
    ctx = client_context(certs.ca)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.returncode is None, log_path.read_text()[-3000:]
            try:
                assert await handshake_serial(port, ctx) == first
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                await asyncio.sleep(0.1)
        stop = asyncio.Event()
        clients = [KeepAlive(port, ctx) for _ in range(8)]
        load = [asyncio.ensure_future(c.run(stop)) for c in clients]
        await answered(clients, 5 * len(clients))  # load before the renewal
        before = sum(c.ok for c in clients)

        # Traefik renews: first a store caught half-written (the watcher must keep serving the
        # old certificate), then the whole file with the new certificate.
        _, new_chain, new_key, second = issue(tmp_path / "ca")
        renewed = store_json({"letsencrypt": [entry(DOMAIN, [f"*.{DOMAIN}"], new_chain, new_key)]})
        write_in_place(store, renewed[: len(renewed) // 2])
        # The watcher has seen it once it says so; it still serves the old certificate.
        deadline = time.monotonic() + 30
        while "not reloaded (keeping the current one)" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            await asyncio.sleep(0.05)
        assert await handshake_serial(port, ctx) == first
        write_in_place(store, renewed)
        deadline = time.monotonic() + 30
        while (serial := await handshake_serial(port, ctx)) != second:
            assert serial == first
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            await asyncio.sleep(0.1)
        # Fresh handshakes from now on all see the renewed certificate.
        for _ in range(5):
            assert await handshake_serial(port, ctx) == second
        during = sum(c.ok for c in clients)
        await answered(clients, during + 5 * len(clients))  # and after it
        stop.set()
        await asyncio.gather(*load)
        after = sum(c.ok for c in clients)
        print(f"keep-alive answers: {after} ({before} before the renewal), 8 connections")
        assert [c.failures for c in clients] == [[]] * len(clients)
        # The connections opened before the renewal kept their certificate and kept answering.
        assert {c.serial for c in clients} == {first}
        assert before > 0 and after > during
        text = log_path.read_text()
        assert text.count("not reloaded (keeping the current one)") == 1  # once, not per look
        assert f"reloaded from {store} (serial {second:x}" in text
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def test_serve_refuses_a_store_without_the_domain_in_one_line(tmp_path: Path) -> None:
    other = make_dev_certs("other.test", tmp_path / "other")
    store = tmp_path / "acme.json"
    write_in_place(
        store,
        store_json({"le": [entry("other.test", [], other.cert.read_bytes(), lego_key(other))]}),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    result = subprocess.run(
        [
            # Port 0: the store is refused before anything binds.
            *(GATEWAY, "serve", "--domain", DOMAIN, "--port", "0"),
            *("--admin-port", "0", "--data-dir", str(tmp_path / "data")),
            *("--tls-acme-store", str(store)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no certificate for both example.test and *.example.test" in result.stderr
    assert "Traceback" not in result.stderr
