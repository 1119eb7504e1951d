"""CSV upload at ``/-/upload-csv`` on every team host.

``views.UploadApp`` is what the gateway holds; the CPU work runs in ``worker.py`` processes,
jobs live in the control store (``jobs.py``), and ``importer.py`` writes the team database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.upload.views import UploadApp

__all__ = ["UploadApp"]


def __getattr__(name: str) -> Any:
    # Lazy: the worker process imports gateway.upload.* and must not pay for Starlette,
    # Jinja2 and Datasette, which only the gateway's pages need.
    if name == "UploadApp":
        from gateway.upload.views import UploadApp

        return UploadApp
    raise AttributeError(name)
