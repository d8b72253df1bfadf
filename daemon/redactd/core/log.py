"""structlog set-up: JSON events to stdout, an opaque job id from contextvars.

Events are verbs on nouns (``job.claimed``, ``job.done``); fields are counts,
sizes, timings and ids. Callers MUST NOT pass paths, file names, boxes or
metadata values; ``scrub`` is a last line of defence for exception text.

Under systemd (the output stream is the journal: ``JOURNAL_STREAM`` names its
device and inode) records go to journald natively, each field its own
journal field: ``event`` as ``REDACTD_EVENT``, ``reason`` as
``REDACTD_REASON`` and so on, the JSON line as ``MESSAGE``, the level as
``PRIORITY``; so ``journalctl -u redactd REDACTD_EVENT=job.quarantined``
selects. They are sent with ``sd_journal_sendv`` and carry no ``CODE_FILE``
(the bindings' ``send`` would add the caller's source path). Where
libsystemd is absent the JSON lines go to the stream as elsewhere; the choice
is made at configuration and logged once per process (``log.backend``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import structlog

_configured = False
_backend_logged = False

#: syslog priorities of structlog's level names
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")


def journal_fields(event_dict: Mapping[str, Any], message: str) -> list[str]:
    """The journal fields of one record: ``KEY=value`` lines for sendv."""
    fields = [
        f"MESSAGE={message}",
        f"PRIORITY={_PRIORITY.get(str(event_dict.get('level', 'info')), 6)}",
        "SYSLOG_IDENTIFIER=redactd",
    ]
    for key, value in event_dict.items():
        if key in ("level", "timestamp"):
            continue  # PRIORITY, and the journal's own time
        name = "REDACTD_" + _FIELD_BAD.sub("_", str(key).upper())
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        fields.append(f"{name}={text}")
    return fields


class _JournalRenderer:
    """Last processor under systemd: renders the JSON line and sends the record."""

    def __init__(self, sendv: Callable[..., object]) -> None:
        self._sendv = sendv
        self._json = structlog.processors.JSONRenderer(sort_keys=False)

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> str:
        line = str(self._json(logger, name, dict(event_dict)))
        try:
            self._sendv(*journal_fields(event_dict, line))
        except OSError:
            return line  # journald gone (stopping?): the line still reaches the stream
        raise structlog.DropEvent


class _DroppingPrintLogger(structlog.PrintLogger):
    """A line that cannot be written (EIO, EPIPE on stdout) is dropped: a
    failed log write must never change what happens to a file (it made a
    good input's job fail as ``internal_error``)."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _DroppingPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _DroppingPrintLogger:
        return _DroppingPrintLogger(self._file)


def _journal_sendv(out: TextIO, env: Mapping[str, str]) -> tuple[Callable[..., object] | None, str]:
    """``(sendv, "")`` when ``out`` is the journal and libsystemd loads, else
    ``(None, why)``; ``why`` is empty when not under systemd at all."""
    want = env.get("JOURNAL_STREAM", "")
    if not want:
        return None, ""
    try:
        st = os.fstat(out.fileno())
    except (OSError, AttributeError, ValueError):
        return None, ""
    if want != f"{st.st_dev}:{st.st_ino}":
        return None, ""
    try:
        from systemd import journal
    except ImportError:  # not installed, or libsystemd.so is missing
        return None, "no_libsystemd"
    fn: Callable[..., object] = journal.sendv
    return fn, ""


def configure(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Configure structlog once per process (idempotent; later calls re-configure)."""
    global _configured, _backend_logged
    out = stream if stream is not None else sys.stdout
    sendv, why = _journal_sendv(out, os.environ if env is None else env)
    renderer: Any = (
        _JournalRenderer(sendv)
        if sendv is not None
        else structlog.processors.JSONRenderer(sort_keys=False)
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
        logger_factory=_DroppingPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _configured = True
    if (sendv is not None or why) and not _backend_logged:
        _backend_logged = True
        if sendv is not None:
            structlog.get_logger("redactd").info("log.backend", backend="journald")
        else:
            structlog.get_logger("redactd").warning("log.backend", backend="stream", reason=why)


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
