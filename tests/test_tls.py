"""HTTPS without Traefik: a dev CA + wildcard cert, served with HSTS and an HTTP->HTTPS redirect.

End to end with real TLS: a client that trusts ONLY the generated CA reaches a team's real
Datasette through the gateway, verifying the wildcard certificate by the team's host name.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509

from gateway.cli import cli
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.tls import check_tls_files, client_context, make_dev_certs
from tests.conftest import StartGateway
from tests.edge import run_edge

DOMAIN = "example.test"


def test_dev_certs_cover_apex_and_wildcard_and_reuse_the_ca(tmp_path: Path) -> None:
    first = make_dev_certs(DOMAIN, tmp_path)
    ca = x509.load_pem_x509_certificate(first.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(first.cert.read_bytes())  # first PEM in the chain
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {DOMAIN, f"*.{DOMAIN}"}
    for key in (first.key, first.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # A second run issues a new leaf from the SAME CA, so clients keep trusting it.
    make_dev_certs(DOMAIN, tmp_path)
    assert x509.load_pem_x509_certificate(first.ca.read_bytes()) == ca
    again = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert again.serial_number != leaf.serial_number
    again.verify_directly_issued_by(ca)


def test_certs_dev_command(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = CliRunner().invoke(cli, ["certs", "dev", "--domain", DOMAIN, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"ca.pem", "ca-key.pem", "cert.pem", "key.pem"}
    assert "--tls-cert" in result.output
    bad = CliRunner().invoke(cli, ["certs", "dev", "--domain", "bad/name", "--out", str(out)])
    assert bad.exit_code == 1 and "invalid domain" in bad.output


def test_bad_tls_files_are_clear_errors(tmp_path: Path) -> None:
    certs = make_dev_certs(DOMAIN, tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        check_tls_files(str(tmp_path / "missing.pem"), str(certs.key))
    with pytest.raises(ConfigError, match="cannot load"):
        check_tls_files(str(certs.cert), str(certs.ca_key))  # a key that does not match
    with pytest.raises(ConfigError, match="both"):
        Config(tls_cert=str(certs.cert))


async def test_https_end_to_end_with_hsts_and_redirect(config: Config, tmp_path: Path) -> None:
    certs = make_dev_certs(DOMAIN, tmp_path / "certs")
    tls = config.replace(
        domain=DOMAIN,
        tls_cert=str(certs.cert),
        tls_key=str(certs.key),
        hsts_max_age=600,
    )
    async with run_edge(tls, teams=("alpha",), redirect=True) as gw:
        await gw.wait_healthy("alpha")
        trusting = client_context(certs.ca)
        async with gw.client(verify=trusting) as client:
            r = await client.get(gw.url("alpha", "/-/versions.json"))
            assert r.status_code == 200, r.text
            assert "datasette" in r.json()
            assert r.headers["strict-transport-security"] == "max-age=600; includeSubDomains"
            apex = await client.get(gw.url(None, "/-/gateway/readyz"))
            assert apex.status_code == 200 and apex.json()["ready"] is True
            assert "strict-transport-security" in apex.headers
        assert gw.config.base_url == f"https://{DOMAIN}:{gw.config.port}"

        # A client trusting only the system store must refuse the dev certificate.
        async with gw.client(verify=ssl.create_default_context()) as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(gw.url("alpha", "/"))

        # Plain HTTP on the redirect port: 308 to the same path and query on HTTPS.
        plain = f"http://alpha.{DOMAIN}:{gw.config.redirect_port}/data/t?_size=5"
        async with gw.client() as client:
            r = await client.get(plain)
            assert r.status_code == 308
            assert (
                r.headers["location"] == f"https://alpha.{DOMAIN}:{gw.config.port}/data/t?_size=5"
            )
            assert "strict-transport-security" not in r.headers  # never over plain HTTP
            evil = await client.get(f"http://evil.example.org:{gw.config.redirect_port}/")
            assert evil.status_code == 400  # never an open redirect


async def test_plain_http_sends_no_hsts(config: Config, start_gateway: StartGateway) -> None:
    gw = await start_gateway(config)
    async with gw.client() as client:
        r = await client.get(gw.url(None, "/-/gateway/livez"))
    assert r.status_code == 200
    assert "strict-transport-security" not in r.headers
