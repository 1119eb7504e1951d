"""CSV upload at ``/-/upload-csv`` on every team host (issue 6).

``views.UploadApp`` is what the gateway holds; the CPU work runs in ``worker.py`` processes,
jobs live in the control store (``jobs.py``), and ``importer.py`` writes the team database.
"""

from gateway.upload.views import UploadApp

__all__ = ["UploadApp"]
