"""The command line: one module per command, the shared start-up in ``common``.

``redactd.cli:main`` is the console script's entry point.
"""

from redactd.cli.main import main

__all__ = ["main"]
