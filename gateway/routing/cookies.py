"""Which upstream ``Set-Cookie`` a team may not send: read the way a browser reads it.

A team's instance must never plant a cookie the gateway relies on (session fixation across the
whole service) nor one scoped to the apex or above (it would reach every team). A prefix test
on the raw header misses what browsers accept: ``gateway_session =X``, ``Domain\\t=...``,
``DOMAIN=.Example.org``, ``__Host-gateway_session=X``. So the header is parsed as RFC 6265
section 5.2 says (and RFC 6265bis, which browsers follow now):

* the name-value pair is everything before the first ``;``; the name is what precedes its
  first ``=``, trimmed of spaces and tabs; a pair without ``=`` is a cookie with an empty
  name (6265bis), which is harmless;
* each attribute is split at its first ``=``; name and value are trimmed; attribute names
  are case-insensitive; the last ``Domain`` wins; a leading ``.`` is ignored and the domain
  is compared in lower case.

A cookie is refused when its name, compared case-insensitively (browsers match the
``__Secure-``/``__Host-`` prefixes that way), is a reserved name with or without either
prefix; or when its Domain is the apex or a parent of it. No library parses Set-Cookie the
browser's way (``http.cookies`` is a server-side Cookie parser and rejects much of this).
"""

from __future__ import annotations

_WSP = b" \t"
PREFIXES = (b"", b"__secure-", b"__host-")


def reserved_names(*names: bytes) -> frozenset[bytes]:
    """``names`` in lower case, each with and without the ``__Secure-``/``__Host-`` prefixes."""
    return frozenset(prefix + name.lower() for name in names for prefix in PREFIXES)


def cookie_name(set_cookie: bytes) -> bytes:
    pair = set_cookie.split(b";", 1)[0]
    if b"=" not in pair:
        return b""
    return pair.split(b"=", 1)[0].strip(_WSP)


def cookie_domain(set_cookie: bytes) -> bytes | None:
    """The Domain a browser would store the cookie under (lower case, no leading dot), or
    None for a host-only cookie."""
    domain: bytes | None = None
    for attribute in set_cookie.split(b";")[1:]:
        key, _, value = attribute.partition(b"=")
        if key.strip(_WSP).lower() == b"domain":
            value = value.strip(_WSP)
            # An empty Domain is ignored (RFC 6265 section 5.2.3), it does not reset.
            if value:
                domain = value.lstrip(b".").lower()
    return domain


def refused(set_cookie: bytes, reserved: frozenset[bytes], apex: bytes) -> str | None:
    """Why a browser-stored cookie from this header would be dangerous, or None if it is not."""
    if cookie_name(set_cookie).lower() in reserved:
        return "a reserved cookie name"
    domain = cookie_domain(set_cookie)
    if domain is not None and apex:
        domain = domain.rstrip(b".")
        if domain == apex or apex.endswith(b"." + domain):
            return "the apex domain or a parent of it"
    return None
