"""TLS in the gateway with the certificate Traefik obtains and renews (``tls_acme_store``).

Traefik keeps ACME (DNS-01 for the wildcard); the gateway serves TLS itself with that
certificate, so a request crosses no second proxy. Traefik's local store (``acme.json``) is
JSON, one object per certificate resolver::

    {"<resolver>": {"Account": {...},
                    "Certificates": [{"domain": {"main": "example.org", "sans": ["*.example.org"]},
                                      "certificate": "<base64 of the PEM chain>",
                                      "key": "<base64 of the PEM key>",
                                      "Store": "default"}]}}

(Go encodes ``[]byte`` as base64.) The gateway picks the certificate whose names cover both the
apex and ``*.<apex>`` (latest expiry wins), writes it as PEM files under
``<data_dir>/tls/`` (0600) for uvicorn, and checks the store every ``tls_acme_interval``
seconds. On a change it loads the new pair into a scratch context first (a bad or half-written
store never replaces a working certificate: Traefik rewrites the file in place), then into the
live ``SSLContext``. That happens on the event loop's thread, between handshakes: OpenSSL gives
each connection its own reference to the certificate, so open connections carry on and every
new handshake gets the new one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.config import Config
from gateway.errors import ConfigError

log = logging.getLogger("gateway.tls")


@dataclass(frozen=True)
class AcmeCertificate:
    """One certificate chosen from the store, as PEM bytes."""

    resolver: str
    chain: bytes
    key: bytes
    names: frozenset[str]
    not_after: datetime.datetime
    serial: int


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def tls_files(config: Config) -> TlsFiles:
    """Where the chosen certificate is written for uvicorn (one place, read by the listener)."""
    folder = config.data_dir / "tls"
    return TlsFiles(folder / "acme-cert.pem", folder / "acme-key.pem")


def read_store(path: Path, domain: str, resolver: str = "") -> AcmeCertificate:
    """The newest certificate in Traefik's ``acme.json`` covering ``domain`` and ``*.domain``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the ACME store {path}: {exc.strerror}") from exc
    if not raw.strip():
        # Traefik creates the store empty at its first start and fills it once ACME has
        # issued the certificate (DNS-01: often a minute or two).
        raise ConfigError(
            f"{path} is empty: Traefik has not stored a certificate yet, or is rewriting "
            "the store (at first start: wait for its ACME challenge, see its log)"
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON (is it Traefik's acme.json?): {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a Traefik ACME store (no resolvers at the top)")
    if resolver and resolver not in data:
        found = ", ".join(sorted(str(k) for k in data)) or "none"
        raise ConfigError(f"{path} has no resolver {resolver!r} (found: {found})")
    wanted = {domain, f"*.{domain}"}
    seen: list[str] = []
    best: AcmeCertificate | None = None
    for name, stored in data.items():
        if resolver and name != resolver:
            continue
        for entry in _certificates(stored):
            cert = _decode(str(name), entry, path)
            if cert is None:
                continue
            seen.append("/".join(sorted(cert.names)))
            if not wanted <= cert.names:
                continue
            if best is None or cert.not_after > best.not_after:
                best = cert
    if best is None:
        found = "; ".join(seen) or "no certificates"
        raise ConfigError(
            f"{path} holds no certificate for both {domain} and *.{domain} (found: {found}); "
            f"ask Traefik's resolver for main={domain!r}, sans=['*.{domain}']"
        )
    return best


def _certificates(stored: Any) -> list[dict[str, Any]]:
    if not isinstance(stored, dict):
        return []
    certs = stored.get("Certificates") or []
    return [c for c in certs if isinstance(c, dict)] if isinstance(certs, list) else []


def _decode(resolver: str, entry: dict[str, Any], path: Path) -> AcmeCertificate | None:
    try:
        chain = base64.b64decode(entry.get("certificate") or "", validate=True)
        key = base64.b64decode(entry.get("key") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        log.warning("%s: a certificate of resolver %s is not base64; skipped", path, resolver)
        return None
    if not chain or not key:
        return None  # Traefik itself drops empty entries
    try:
        leaf = x509.load_pem_x509_certificate(chain)
    except ValueError:
        log.warning("%s: a certificate of resolver %s is not PEM; skipped", path, resolver)
        return None
    names: set[str] = set()
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return AcmeCertificate(
        resolver, chain, key, frozenset(names), leaf.not_valid_after_utc, leaf.serial_number
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def install(cert: AcmeCertificate, files: TlsFiles) -> None:
    """Write the pair for uvicorn, after checking that it loads (key matches the chain)."""
    staged = TlsFiles(
        files.cert.with_name(files.cert.name + ".new"), files.key.with_name(files.key.name + ".new")
    )
    _write_private(staged.cert, cert.chain)
    _write_private(staged.key, cert.key)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(staged.cert, staged.key)
    except (ssl.SSLError, ValueError) as exc:
        for p in (staged.cert, staged.key):
            p.unlink(missing_ok=True)
        raise ConfigError(f"the ACME store's certificate and key do not load: {exc}") from exc
    os.replace(staged.key, files.key)
    os.replace(staged.cert, files.cert)


def prepare(config: Config) -> TlsFiles:
    """At start-up: the store's certificate written for the listener, or a clear error."""
    files = tls_files(config)
    cert = read_store(Path(config.tls_acme_store), config.domain, config.tls_acme_resolver)
    install(cert, files)
    log.info(
        "TLS certificate from %s (resolver %s, serial %x, expires %s)",
        config.tls_acme_store,
        cert.resolver,
        cert.serial,
        cert.not_after.date(),
    )
    return files


class AcmeWatcher:
    """Reloads the live SSLContext when Traefik renews the certificate in its store."""

    def __init__(self, config: Config, context: ssl.SSLContext) -> None:
        self.config = config
        self.context = context
        self.store = Path(config.tls_acme_store)
        self.files = tls_files(config)
        # No stamp yet: the first look reads the store, so a renewal written between prepare()
        # and this watcher's start is not taken for the certificate already served.
        self._stamp = (0, 0, 0)
        self._serial = self._current_serial()
        self._failed = (0, 0, 0)
        self.reloads = 0

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = self.store.stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _current_serial(self) -> int:
        try:
            return x509.load_pem_x509_certificate(self.files.cert.read_bytes()).serial_number
        except (OSError, ValueError):
            return -1

    def check(self) -> bool:
        """One look at the store; True if the live context now serves a new certificate."""
        stamp = self._stat()
        if stamp in (self._stamp, self._failed):
            return False
        try:
            cert = read_store(self.store, self.config.domain, self.config.tls_acme_resolver)
            if cert.serial == self._serial:
                self._stamp = stamp  # rewritten (another domain, the account), same certificate
                return False
            install(cert, self.files)
            # Same thread as the handshakes: no connection sees a half-loaded pair.
            self.context.load_cert_chain(self.files.cert, self.files.key)
        except (ConfigError, ssl.SSLError, OSError) as exc:
            # Possibly caught mid-write: Traefik's next write changes the stamp, and that is
            # read again. Said once per version of the file, not at every look.
            self._failed = stamp
            log.warning("TLS certificate not reloaded (keeping the current one): %s", exc)
            return False
        self._stamp = stamp
        self._serial = cert.serial
        self.reloads += 1
        log.info(
            "TLS certificate reloaded from %s (serial %x, expires %s)",
            self.store,
            cert.serial,
            cert.not_after.date(),
        )
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.tls_acme_interval)
            self.check()


async def serve_with_reload(config: Config, main: Any, serving: Any) -> None:
    """Run ``serving`` (the listeners); with ``tls_acme_store``, watch the store meanwhile."""
    if not config.tls_acme_store:
        await serving
        return
    task = asyncio.ensure_future(serving)
    while not main.started and not task.done():  # noqa: ASYNC110 (uvicorn exposes a flag)
        await asyncio.sleep(0.05)
    watcher = (
        None if task.done() else asyncio.ensure_future(AcmeWatcher(config, main.config.ssl).run())
    )
    try:
        await task
    finally:
        if watcher is not None:
            watcher.cancel()
