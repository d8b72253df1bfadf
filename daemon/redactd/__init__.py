"""redactd: on-premise anonymization of faces and licence plates in images and videos."""

from __future__ import annotations

__version__ = "0.1.0"
