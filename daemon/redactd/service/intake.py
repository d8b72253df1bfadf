"""Intake: a settled candidate becomes a job in the work area.

(The atomic claim itself is the spool's, ``service.spool.claim``; this is
the supervisor's side of it.)

The watcher says a file *looks* complete; the claim checks the snapshot it
settled with, takes the sidecar that arrived while it waited in the queue,
refuses what is not a regular file (unless it can be moved as it is to
quarantine on the same filesystem), and hands the candidate back to its
watcher in every case (released, refused for good, or to settle again).
Separate from running the job: it talks to the watcher, a job does not.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

from redactd.core import log
from redactd.core.config import ServiceConfig
from redactd.core.fsutil import errname
from redactd.service.queue import Work
from redactd.service.space import Space
from redactd.service.spool.errors import InputChanged, NotMovable
from redactd.service.spool.job import Job, Target
from redactd.service.spool.workarea import Spool
from redactd.service.stability import writer_active
from redactd.service.watch import Candidate
from redactd.stages.instructions.parse import sidecar_path


class Intake:
    """Turns a :class:`Work` into a :class:`Job` (or nothing, said why in the log)."""

    def __init__(self, spool: Spool, space: Space, service: Callable[[], ServiceConfig]) -> None:
        self.spool = spool
        self.space = space
        self._service = service
        self.log = log.get("redactd.service")

    def claim(self, work: Work) -> Job | None:
        cand, target = work.cand, work.target
        refused: tuple[int, int] | None = None
        try:
            if self.space.paused_dev(target.outbound) is not None:
                self.space.pause(target.outbound, 0, work)
                return None  # parked with the watcher's in-flight mark kept
            if not cand.regular and not self._special_movable(cand, target):
                raise NotMovable()
            sidecar = cand.sidecar if cand.orphan else self._late_sidecar(cand)
            expect = (cand.dev, cand.ino, cand.size, cand.mtime_ns)
            job = self.spool.claim(cand.rel, target, cand.regular, sidecar, expect)
        except InputChanged:
            # Not the file that settled (grown, truncated, replaced, touched),
            # or a sidecar joined it just now: it settles again.
            self.log.info("job.input_changed", stage="claim", size=cand.size)
            work.watcher.release(cand.key, retrack=True)
            return None
        except NotMovable:
            # Never read, never followed; it stays where it is, said once.
            refused = (cand.dev, cand.ino)
            self.log.warning(
                "job.refused", job=log.new_job_id(), reason="not_regular_file", action="left"
            )
            work.watcher.release(cand.key, refused)
            return None
        except OSError as e:
            # The input is untouched in inbound; the next rescan offers it again.
            self.log.warning("job.claim_failed", errno=errname(e), size=cand.size)
            work.watcher.release(cand.key)
            return None
        work.watcher.release(cand.key)
        if job is None:
            return None  # taken by another instance or removed: not ours
        self.log.info(
            "job.claimed",
            job=job.id,
            watch=cand.watch,
            size=job.size,
            regular=cand.regular,
            depth=len(cand.rel) - 1,
            sidecar=job.sidecar is not None,
            sidecar_alone=cand.orphan,
        )
        return job

    def _special_movable(self, cand: Candidate, target: Target) -> bool:
        try:
            qdev = target.quarantine.stat().st_dev
        except OSError:
            return False
        return cand.dev == self.spool.dev == qdev

    def _late_sidecar(self, cand: Candidate) -> str | None:
        """The input's sidecar as it is now: one that arrived while the input
        waited in the queue is claimed with it. ``InputChanged`` when it is
        too young (or open for writing) to be complete."""
        if cand.sidecar is not None:
            return cand.sidecar
        side = sidecar_path(cand.path)
        try:
            st = os.lstat(side)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return side.name  # claimed as named; the job fails closed as invalid_sidecar
        # ctime too: a copy that kept an old mtime (cp -p, rsync) is still new.
        changed = max(st.st_mtime, st.st_ctime)
        young = time.time() - changed < self._service().settle_seconds
        if young or writer_active(side):
            raise InputChanged()
        return side.name
