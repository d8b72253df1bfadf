"""When is a file complete: the pure settle rule, and the open-writer probe.

``StabilityTracker`` takes no I/O (the caller passes what it saw and when),
so the rule is tested without a clock; ``writer_active`` is the one probe
that asks the kernel whether a local process still writes the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: How long a file that was opened for writing (inotify saw a write but no
#: close) is held back at most, in case the close event was lost.
OPEN_GRACE_SECONDS = 600.0

# --------------------------------------------------------------------------- stability


@dataclass(frozen=True)
class FileState:
    """What we compare between two looks at a file."""

    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileState:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class PairState:
    """An input and its sidecar looked at together (None: that file is absent)."""

    media: FileState | None
    sidecar: FileState | None


#: What an event says about a file: opened, closed, written to, or anything
#: else (created, moved in, attributes).
EventKind = Literal["open", "close", "write", "other"]


@dataclass
class _Entry:
    state: FileState | PairState | None = None
    changed_at: float = 0.0
    last_change: float = float("-inf")  # last write or other event
    last_activity: float = float("-inf")  # last open, close or write event
    opens: int = 0
    next_check: float = 0.0


class StabilityTracker:
    """Decides when a file is complete. Pure: no I/O, the caller passes ``now``.

    A file is *ready* when two observations at least ``settle_seconds`` apart
    saw the same :class:`FileState`, no write or other change event arrived
    in the last ``settle_seconds``, and no one is known to hold it open.
    Opens are counted from inotify's open/close events (a write implies an
    open we may have missed); because events can be lost or merged, an open
    with no activity for ``open_grace_seconds`` no longer holds the file
    back. Opens and closes alone (readers, our own probe) do not restart the
    quiet period. Polling gives no open/close events, so there only size,
    mtime and inode count. With ``settle_seconds == 0`` the first quiet
    observation is enough.
    """

    def __init__(self, settle_seconds: float, open_grace_seconds: float = OPEN_GRACE_SECONDS):
        self.settle = max(0.0, settle_seconds)
        self.open_grace = max(self.settle, open_grace_seconds)
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _schedule(self, key: str, e: _Entry, at: float) -> None:
        e.next_check = at
        heapq.heappush(self._heap, (at, key))

    def event(self, key: str, now: float, kind: EventKind = "other") -> None:
        """Something happened at ``key`` (see :data:`EventKind`)."""
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry(changed_at=now)
        if kind in ("write", "other"):
            e.last_change = now
        if kind != "other":
            e.last_activity = now
        if kind == "open":
            e.opens += 1
        elif kind == "close":
            e.opens = max(0, e.opens - 1)
        elif kind == "write" and e.opens == 0:
            e.opens = 1  # opened before we watched, or the open event was lost
        # First sighting: look at once; otherwise wait for quiet.
        self._schedule(key, e, now + self.settle if e.state is not None else now)

    def observe(self, key: str, state: FileState | PairState, now: float) -> bool:
        """Record a fresh look at ``key``; True when it is ready now.

        A ready key stays tracked until :meth:`forget` (the caller hands it out
        and forgets it).
        """
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry(changed_at=now)
        if e.state != state:
            first = e.state is None
            e.state = state
            e.changed_at = now
            if not (first and self.settle == 0.0):
                self._schedule(key, e, now + self.settle)
                return False
        quiet_since = max(e.changed_at, e.last_change)
        if e.opens > 0 and now - e.last_activity < self.open_grace:
            self._schedule(key, e, e.last_activity + self.open_grace)
            return False
        if now - quiet_since < self.settle:
            self._schedule(key, e, quiet_since + self.settle)
            return False
        return True

    def recheck(self, key: str, at: float) -> None:
        """Look at ``key`` again at ``at`` without counting a change (a timed wait)."""
        e = self._entries.get(key)
        if e is not None:
            self._schedule(key, e, at)

    def due(self, now: float) -> list[str]:
        """Keys that should be looked at (``lstat``) now."""
        out: list[str] = []
        seen: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            e = self._entries.get(key)
            if e is None or e.next_check != at or key in seen:
                continue  # stale heap entry: rescheduled or forgotten since
            seen.add(key)
            out.append(key)
        return out

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)  # heap entries go stale and are skipped


# --------------------------------------------------------------------------- open writers


def writer_active(path: Path) -> bool | None:
    """Whether a local process holds ``path`` open for writing.

    Linux refuses a read *lease* (EAGAIN) while anyone has the file open for
    writing, so taking one and dropping it at once answers the question
    without reading a byte. None when it cannot tell: not the file's owner
    and no CAP_LEASE, leases disabled, a network filesystem (a writer on
    another host is invisible anyway; stability covers it). The descriptor
    is opened ``O_NOFOLLOW | O_NONBLOCK`` and checked to be a regular file.
    The daemon ignores SIGIO: a lease break during the microseconds the
    lease is held must not kill it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
        except OSError as e:
            return True if e.errno == errno.EAGAIN else None
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


_F_SETLEASE: int = getattr(fcntl, "F_SETLEASE", 1024)
