"""Free space: the disk-full pause of an outbound folder (or the work area).

A job that meets a full disk (``TransientError(DISK_FULL)``, ENOSPC/EDQUOT)
or an outbound folder with less than ``service.min_free_bytes`` free does
not count an attempt: its folder's filesystem is *paused*, the job and every
later one for it are parked, ``STATUS=`` and the status file say so, and
work resumes when there is room again (checked once a second by the loop).
Separate because both the claim and the job outcomes pause, and the loop
resumes; the pause is keyed by filesystem (``st_dev``), not by folder.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redactd.core import log
from redactd.core.config import ServiceConfig
from redactd.core.errors import TransientError, TransientReason
from redactd.service.queue import Work, WorkQueue
from redactd.service.spool.job import Job
from redactd.service.spool.workarea import Spool, free_bytes

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(Exception):
    """Internal signal: the outbound filesystem is out of space."""


def is_disk_full(e: BaseException) -> bool:
    """Whether an error means a full disk (then the job waits, uncounted)."""
    if isinstance(e, TransientError):
        cause = e.__cause__
        return e.kind is TransientReason.DISK_FULL or (
            isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS
        )
    return isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS


@dataclass
class _Pause:
    folder: Path
    needed: int
    since: float
    parked: list[Job | Work] = field(default_factory=list)


class Space:
    """The paused filesystems and what waits for them (guarded by the queue's lock)."""

    def __init__(
        self,
        spool: Spool,
        queue: WorkQueue,
        service: Callable[[], ServiceConfig],
        clock: Callable[[], float],
        on_pause: Callable[[], None],
    ) -> None:
        self.spool = spool
        self.queue = queue
        self._service = service
        self._clock = clock
        self._on_pause = on_pause  # publish the status at once
        self.log = log.get("redactd.service")
        self._paused: dict[int, _Pause] = {}

    def pause(self, folder: Path, needed: int, item: Job | Work) -> None:
        """Park ``item`` until ``folder``'s filesystem has ``needed`` bytes free."""
        dev = folder.stat().st_dev
        with self.queue.lock:
            p = self._paused.get(dev)
            if p is None:
                p = self._paused[dev] = _Pause(folder, needed, self._clock())
                new = True
            else:
                p.needed = max(p.needed, needed)
                new = False
            p.parked.append(item)
        if new:
            try:
                free = free_bytes(folder)
            except OSError:
                free = -1
            reason = "work_area_full" if folder == self.spool.dir else "outbound_full"
            self.log.warning("service.paused", reason=reason, free_bytes=free, needed_bytes=needed)
            self._on_pause()

    def paused_dev(self, folder: Path) -> int | None:
        try:
            dev = folder.stat().st_dev
        except OSError:
            return None
        with self.queue.lock:
            return dev if dev in self._paused else None

    def check(self, now: float) -> None:
        """Resume every paused filesystem that has room again."""
        with self.queue.lock:
            paused = list(self._paused.items())
        for dev, p in paused:
            try:
                free = free_bytes(p.folder)
            except OSError:
                continue
            if free < p.needed:
                continue
            with self.queue.lock:
                self._paused.pop(dev, None)
                self.queue.put(p.parked)
            self.log.info(
                "service.resumed",
                free_bytes=free,
                paused_s=round(now - p.since, 1),
                requeued=len(p.parked),
            )

    def counts(self) -> tuple[int, int]:
        """(paused filesystems, items parked on them)."""
        with self.queue.lock:
            return len(self._paused), sum(len(p.parked) for p in self._paused.values())

    def work_full(self) -> bool:
        """Whether the work area (not the outbound folder) is what is full."""
        try:
            return free_bytes(self.spool.dir) < (1 << 20)
        except OSError:
            return False

    def needed(self, job: Job, folder: Path | None = None) -> int:
        # Resume only when there is clearly room for this result again (twice
        # the input), but never ask for more than half of the filesystem.
        want = 2 * job.size + (64 << 10)
        try:
            st = os.statvfs(folder or job.target.outbound)
            want = min(want, st.f_blocks * st.f_frsize // 2)
        except OSError:
            pass
        return want if folder is not None else max(self._service().min_free_bytes, want)
