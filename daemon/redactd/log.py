"""structlog set-up: JSON events to stdout, an opaque job id from contextvars.

Events are verbs on nouns (``job.claimed``, ``job.done``); fields are counts,
sizes, timings and ids. Callers MUST NOT pass paths, file names, boxes or
metadata values; ``scrub`` is a last line of defence for exception text.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

_configured = False


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog once per process (idempotent; later calls re-configure)."""
    global _configured
    out = stream if stream is not None else sys.stdout
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get(name: str = "redactd") -> Any:
    """A bound logger; configures the default (JSON, info) on first use."""
    if not _configured:
        configure()
    return structlog.get_logger(name)


def new_job_id() -> str:
    """An opaque id that says nothing about the input (random, not a hash)."""
    return secrets.token_hex(8)


_PATHISH = re.compile(r"(?:[A-Za-z]:)?[/\\\\][^\s'\"]*|'[^']*'|\"[^\"]*\"")

#: Commands redactd tells operators to run; always kept when quoted.
COMMAND_HINTS = frozenset(
    {
        "redactd models fetch",
        "redactd models verify",
        "redactd models list",
        "redactd models quantize",
        "redactd check-config",
    }
)

_known: set[str] = set(COMMAND_HINTS)


def know(words: Iterable[str]) -> None:
    """Add words redactd knows itself (model, detector, profile names from
    the manifest and the config) to the vocabulary ``scrub`` keeps.

    The daemon registers them once at start-up, so an operator reads which
    model is missing instead of ``<redacted>``. Never register anything that
    came from an input (a file name, a path, metadata).
    """
    _known.update(w for w in words if w and "/" not in w and "\\" not in w)


def scrub(text: str, keep: Iterable[str] = ()) -> str:
    """Remove anything path-like or quoted from an exception message.

    Third-party messages (OSError, FFmpeg, Pillow) embed file names; this turns
    them into ``<redacted>`` so a traceback summary can still be logged. A
    quoted token is kept only when it is exactly a word redactd knows itself
    (``know``, ``keep``, ``COMMAND_HINTS``): that is what redactd's own
    messages quote (``model 'centerface' ...; run 'redactd models fetch'``),
    and a file name can only survive by being one of those names.
    """
    extra = set(keep)

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if len(token) >= 2 and token[0] in "'\"" and token[-1] == token[0]:
            inner = token[1:-1]
            if inner in _known or inner in extra:
                return token
        return "<redacted>"

    return _PATHISH.sub(repl, text)
