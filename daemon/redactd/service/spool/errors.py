"""The spool's own exceptions, raised by one step and handled by the supervisor.

Separate so that the claim steps, the work-area lock and their callers share
them without importing each other.
"""

from __future__ import annotations


class SpoolBusy(Exception):
    """Another process holds the work area."""


class NotMovable(Exception):
    """A special file that cannot be moved into the work area (other filesystem)."""


class InputChanged(Exception):
    """The inbound file is not the one that settled (it grew, shrank, was
    replaced or touched): it was left (or put back) in inbound to settle again."""
