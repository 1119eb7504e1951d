"""The gateway's one error tree, and the one place errors become HTTP statuses.

GatewayError
├── ConfigError            bad setting (CLI exits 2)
├── InvalidSlug            a team slug that is not a safe DNS label, or reserved
├── TeamExists / TeamNotFound
├── TeamBusy               a restore, deploy or delete of the team is under way (API: 409)
├── RuntimeUnavailable     docker/debootstrap missing, engine unreachable
└── HTTPError              anything answered to a client; ``status`` is the mapping
    ├── BadRequest          400  malformed host, headers or framing
    ├── Unauthorized        401  API client without credentials
    │   └── SignInRequired  401 for API clients, a redirect to the apex login for browsers
    ├── SignInHandoff       303  a team host takes over the apex session (sets its cookie)
    ├── Forbidden           403  signed in, but not a member
    ├── NotFound            404  unknown page
    │   └── UnknownHost     404  no team at this host
    ├── MethodNotAllowed    405  a page that does not take this method
    ├── Conflict            409  the team is busy with another operation
    ├── RequestTimeout      408  request head or body too slow (written by gateway/http/protocol.py)
    ├── PayloadTooLarge     413
    ├── URITooLong          414  request target longer than max_request_line
    ├── TooManyRequests     429  sign-in throttled (Retry-After)
    ├── HeaderFieldsTooLarge 431 request head over max_header_bytes or max_headers
    ├── ClientClosed        499  the client went away (logged, never sent)
    ├── InsufficientStorage 507  the disk is full: nothing was written (Retry-After)
    ├── BadGateway          502  refused, reset before a response, bad response
    ├── Unavailable         503  no healthy target in time, maintenance (Retry-After)
    └── GatewayTimeout      504  connect/read timeout, drain timeout
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: the message is meant for the user."""


class ConfigError(GatewayError):
    pass


class InvalidSlug(GatewayError):
    pass


class TeamExists(GatewayError):
    pass


class TeamNotFound(GatewayError):
    pass


class TeamBusy(GatewayError):
    """Another operation (restore, deploy, delete) holds the team; the message names it."""


class RuntimeUnavailable(GatewayError):
    pass


class HTTPError(GatewayError):
    status = 500
    title = "Gateway error"

    def __init__(self, detail: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.retry_after = retry_after


class BadRequest(HTTPError):
    status, title = 400, "Bad request"


class Unauthorized(HTTPError):
    status, title = 401, "Sign-in required"


class SignInRequired(Unauthorized):
    """Not signed in: browsers are redirected to ``location`` (the apex login with a safe
    ``next``), API clients get 401 JSON (``gateway/responses.py`` decides)."""

    def __init__(self, detail: str = "", *, location: str) -> None:
        super().__init__(detail or "Please sign in to continue.")
        self.location = location


class SignInHandoff(HTTPError):
    """Not an error: the sign-in handoff on a team host sets that host's session cookie and
    redirects (``gateway/auth/gatekeeper.py``); rendered by ``gateway/responses.py``."""

    status, title = 303, "See other"

    def __init__(self, location: str, set_cookie: str | None = None) -> None:
        super().__init__("Continue to " + location)
        self.location = location
        self.set_cookie = set_cookie


class Forbidden(HTTPError):
    status, title = 403, "Forbidden"


class NotFound(HTTPError):
    status, title = 404, "Not found"


class MethodNotAllowed(HTTPError):
    status, title = 405, "Method not allowed"


class Conflict(HTTPError):
    status, title = 409, "Conflict"


class RequestTimeout(HTTPError):
    status, title = 408, "Request timeout"


class UnknownHost(NotFound):
    """No team at this host (counted apart from other 404s)."""


class PayloadTooLarge(HTTPError):
    status, title = 413, "Payload too large"


class URITooLong(HTTPError):
    status, title = 414, "URI too long"


class TooManyRequests(HTTPError):
    status, title = 429, "Too many attempts"


class HeaderFieldsTooLarge(HTTPError):
    status, title = 431, "Request header fields too large"


class InsufficientStorage(HTTPError):
    status, title = 507, "Out of storage space"


# "The client went away": nginx's 499, the status counted and logged for such a request.
CLIENT_GONE = 499


class ClientGone(Exception):
    """The client went away: nothing can be answered (the request is counted as CLIENT_GONE)."""


class ClientClosed(HTTPError):
    """ClientGone met inside a Starlette page (an upload), where errors are HTTPErrors."""

    status, title = CLIENT_GONE, "Client closed request"


class BadGateway(HTTPError):
    status, title = 502, "Bad gateway"


class Unavailable(HTTPError):
    status, title = 503, "Service unavailable"


class GatewayTimeout(HTTPError):
    status, title = 504, "Gateway timeout"


def for_status(status: int, detail: str = "") -> HTTPError:
    """A library's error (Starlette's 404, 405, a form's size limit) as the gateway's own, so
    it gets the same page or JSON as every other error."""
    for cls in HTTPError.__subclasses__():
        if cls.status == status and cls is not SignInHandoff:
            return cls(detail)
    err = HTTPError(detail)
    err.status = status
    return err
