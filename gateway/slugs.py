"""Team slugs become DNS labels (``<slug>.<domain>``) and directory names, so they are strict."""

from __future__ import annotations

import re

from gateway.errors import InvalidSlug

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# Names a team could use to impersonate the service or shadow infrastructure hosts.
RESERVED = frozenset(
    [
        "admin",
        "administrator",
        "api",
        "app",
        "apps",
        "assets",
        "auth",
        "billing",
        "blog",
        "cdn",
        "dashboard",
        "datasette",
        "default",
        "dev",
        "docs",
        "example",
        "ftp",
        "gateway",
        "help",
        "imap",
        "internal",
        "localhost",
        "login",
        "logout",
        "mail",
        "metrics",
        "mx",
        "ns",
        "ns1",
        "ns2",
        "pop",
        "pop3",
        "root",
        "security",
        "signin",
        "signup",
        "smtp",
        "ssl",
        "static",
        "status",
        "support",
        "system",
        "test",
        "traefik",
        "upload",
        "uploads",
        "webmail",
        "www",
    ]
)


def validate_slug(raw: str) -> str:
    """Return the canonical slug or raise InvalidSlug with a message a user can act on."""
    if not isinstance(raw, str):
        raise InvalidSlug("a team slug must be text")
    slug = raw.strip().lower()
    if not slug:
        raise InvalidSlug("a team slug cannot be empty")
    if len(slug) > 63:
        raise InvalidSlug("a team slug can be at most 63 characters (a DNS label)")
    if not _LABEL.match(slug):
        raise InvalidSlug(
            f"{raw!r} is not a valid team slug: use lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    if "--" in slug[2:4] or slug.startswith("xn--"):
        raise InvalidSlug(f"{raw!r} is not allowed: slugs cannot look like punycode (xn--)")
    if slug in RESERVED:
        raise InvalidSlug(f"{slug!r} is a reserved name; please choose another")
    return slug
