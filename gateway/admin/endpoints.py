"""What every admin API module shares (admin/api.py, deploy/api.py, backup/api.py): a JSON
object as the request body, and the gateway's own errors as clear 4xx answers, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import (
    BadRequest,
    Conflict,
    GatewayError,
    HTTPError,
    NotFound,
    TeamBusy,
    TeamNotFound,
)


async def json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise BadRequest("the body must be JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def mapped(handler: Any) -> Any:
    """``handler`` with the gateway's own errors as 4xx: TeamNotFound 404, TeamBusy 409 (a
    restore, deploy or delete holds the team), others 400."""

    async def wrapped(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except HTTPError:
            raise
        except TeamNotFound as exc:
            raise NotFound(str(exc)) from exc
        except TeamBusy as exc:
            raise Conflict(str(exc)) from exc
        except GatewayError as exc:
            raise BadRequest(str(exc)) from exc
        return response

    return wrapped
