"""Traefik's ACME store (``acme.json``) as Traefik writes it, for tests and the load scenario.

The layout is the one Traefik's ``LocalStore`` writes (resolver -> Account + Certificates, PEM
chain and key base64-encoded, written in place with mode 0600). Its certificates come from
``gateway certs dev``'s CA: an ACME CA (Let's Encrypt) cannot be reached from here, and that
is the only stand-in.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.tls import DevCerts, make_dev_certs


def lego_key(certs: DevCerts) -> bytes:
    """The key as Traefik's ACME client (lego) stores an EC key: SEC1 'EC PRIVATE KEY'."""
    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def entry(main: str, sans: list[str], chain: bytes, key: bytes) -> dict[str, object]:
    return {
        "domain": {"main": main, "sans": sans},
        "certificate": base64.b64encode(chain).decode(),
        "key": base64.b64encode(key).decode(),
        "Store": "default",
    }


def store_json(resolvers: dict[str, list[dict[str, object]]]) -> bytes:
    data = {
        name: {
            "Account": {
                "Email": "ops@example.test",
                "Registration": {
                    "body": {"status": "valid", "contact": ["mailto:ops@example.test"]},
                    "uri": "https://acme.invalid/acme/acct/1",
                },
                "PrivateKey": base64.b64encode(b"not used by the gateway").decode(),
                "KeyType": "4096",
            },
            "Certificates": certs,
        }
        for name, certs in resolvers.items()
    }
    return json.dumps(data, indent=2).encode()  # Go's json.MarshalIndent(object, "", "  ")


def write_in_place(path: Path, data: bytes) -> None:
    """As Traefik's LocalStore saves: os.WriteFile, truncating the same file (not atomic)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def issue(domain: str, tmp: Path) -> tuple[DevCerts, bytes, bytes, int]:
    """A fresh leaf and key for ``domain`` and ``*.domain`` from the same CA each time."""
    certs = make_dev_certs(domain, tmp)
    chain = certs.cert.read_bytes()
    serial = x509.load_pem_x509_certificate(chain).serial_number
    return certs, chain, lego_key(certs), serial


def wildcard_store(domain: str, chain: bytes, key: bytes, resolver: str = "letsencrypt") -> bytes:
    """A store whose one resolver holds one certificate for ``domain`` + ``*.domain``."""
    return store_json({resolver: [entry(domain, [f"*.{domain}"], chain, key)]})
