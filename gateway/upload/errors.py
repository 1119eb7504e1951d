"""The one error an import raises for a problem with the user's file or choices.

The message is shown as is on the page and in the job's JSON, so it must say what is wrong
and, where possible, what to do about it.
"""

from __future__ import annotations


class ImportFailed(Exception):
    """The file or the chosen options cannot be imported; the message says why."""
