"""HTTPS without Traefik: a local CA and a wildcard certificate for the appliance and for tests.

``gateway certs dev --domain D`` writes, into one directory:

    ca.pem / ca-key.pem     a self-signed CA ("gateway dev CA for D"), 10 years
    cert.pem / key.pem      a leaf certificate for ``D`` and ``*.D``, signed by that CA, 1 year

Clients trust ``ca.pem`` (browsers: import it; curl: ``--cacert``; httpx: ``verify=ssl ctx``).
Keys are ECDSA P-256: small, fast handshakes, accepted everywhere that matters. Private keys
are written 0600, and an existing CA is reused so re-issuing a leaf keeps clients trusting it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import ConfigError

CA_DAYS = 3650
LEAF_DAYS = 365


@dataclass(frozen=True)
class DevCerts:
    ca: Path
    ca_key: Path
    cert: Path
    key: Path


def dev_paths(out_dir: Path) -> DevCerts:
    return DevCerts(
        out_dir / "ca.pem", out_dir / "ca-key.pem", out_dir / "cert.pem", out_dir / "key.pem"
    )


def make_dev_certs(domain: str, out_dir: Path) -> DevCerts:
    """Create (or reuse) the dev CA and issue a fresh wildcard leaf for ``domain``."""
    domain = domain.strip().lower().rstrip(".")
    if not domain or any(c in domain for c in "/:@ *"):
        raise ConfigError(f"invalid domain {domain!r}: give a bare host name like example.test")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = dev_paths(out_dir)
    if paths.ca.exists() and paths.ca_key.exists():
        ca_key = _load_key(paths.ca_key)
        ca_cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key, domain)
        _write_key(paths.ca_key, ca_key)
        paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _leaf_certificate(key, domain, ca_key, ca_cert)
    _write_key(paths.key, key)
    # The chain: leaf first, then the CA, so clients that only know the CA can build it.
    paths.cert.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return paths


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, domain: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gateway dev CA for {domain}")])
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Limit the damage a leaked dev CA can do: it may only sign names under the domain.
        .add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(domain)], excluded_subtrees=None),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    key: ec.EllipticCurvePrivateKey,
    domain: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> x509.Certificate:
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
    if domain == "localhost":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an EC private key made by `gateway certs dev`")
    return key


def check_tls_files(cert: str, key: str) -> None:
    """Fail with a clear message before binding anything if the pair cannot be loaded."""
    for label, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"{label} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} with key {key}: {exc}") from exc


def client_context(ca: Path) -> ssl.SSLContext:
    """An SSL context trusting only ``ca``: what the tests and ``gateway`` CLI clients use."""
    return ssl.create_default_context(cafile=str(ca))
