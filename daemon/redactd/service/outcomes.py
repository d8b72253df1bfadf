"""What happens to a job once its attempt ended, by outcome.

* success -> delivered (``spool.deliver``), ``job.done``;
* a permanent reason -> quarantined with its reason code;
* a transient one -> retried with exponential back-off (jittered),
  quarantined only after ``service.max_attempts`` (with the last reason
  code when it is a known one, e.g. ``unreadable``, else
  ``too_many_attempts``);
* a full disk -> the attempt is not counted and the folder is paused
  (``space``);
* an input that changed since its claim -> the attempt is dropped, not
  counted, and the job looks again after ``settle_seconds``.

Each outcome that fails on I/O (a quarantine or a delivery step) is retried
later itself, never lost. Separate from the attempt (``job``), which only
decides which outcome it was; these counts feed the status.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable

from redactd.core import log
from redactd.core.config import ServiceConfig
from redactd.core.errors import REASONS, PermanentInputError
from redactd.core.fsutil import errname
from redactd.core.types import JobResult
from redactd.pipeline.record import JobRecord
from redactd.service.metrics import Metrics
from redactd.service.queue import WorkQueue
from redactd.service.space import DISK_FULL_ERRNOS, Space
from redactd.service.spool.job import Job
from redactd.service.spool.workarea import Spool

#: The shortest wait before a changed input is looked at again: one tick of
#: the main loop.
_MIN_RESETTLE = 0.25


class Outcomes:
    """Delivers, quarantines, retries and pauses jobs; counts done and quarantined."""

    def __init__(
        self,
        spool: Spool,
        space: Space,
        queue: WorkQueue,
        metrics: Metrics,
        service: Callable[[], ServiceConfig],
    ) -> None:
        self.spool = spool
        self.space = space
        self.queue = queue
        self.metrics = metrics
        self._service = service
        self.log = log.get("redactd.service")
        self._lock = threading.Lock()
        self.done = 0
        self.quarantined = 0
        self.retries = 0

    def deliver(
        self, job: Job, result: JobResult | None, t0: float, record: JobRecord | None = None
    ) -> None:
        try:
            self.spool.deliver(job)
        except PermanentInputError as e:
            self.quarantine(job, e.reason, e.stage or "deliver", e.detail)
            return
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS and self.space.work_full():
                self.space.pause(self.spool.dir, self.space.needed(job, self.spool.dir), job)
            elif e.errno in DISK_FULL_ERRNOS:
                self.space.pause(job.target.outbound, self.space.needed(job), job)
            else:
                self.transient(job, errname(e).lower(), "deliver")
            return
        with self._lock:
            self.done += 1
        self.metrics.job_done(result, time.perf_counter() - t0)
        if result is None:
            self.log.info("job.done", job=job.id, attempts=job.attempts, resumed=True)
            return
        # The record's own fields (minus the input's sha256) override the
        # pipeline's flat ones where both speak, so log and record agree.
        fields: dict[str, object] = {"job": job.id, **result.log_fields()}
        if record is not None:
            fields.update(record.log_fields())
        fields["attempts"] = job.attempts
        fields["total_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        fields["queued_s"] = round(max(0.0, time.time() - job.claimed_at), 3)
        self.log.info("job.done", **fields)

    def disk_full(self, job: Job, work_area: bool = False, counted: bool = True) -> None:
        # The disk, not the input, failed: do not count it. If the work area is
        # full too, the count is corrected in memory only.
        with contextlib.suppress(OSError):
            if counted:
                self.spool.undo_attempt(job)
            else:
                self.spool.discard_output(job)
        if work_area:
            # Pausing the outbound folder would resume at once (it has room)
            # and loop; wait for the work area to have room instead.
            self.space.pause(self.spool.dir, self.space.needed(job, self.spool.dir), job)
            return
        self.space.pause(job.target.outbound, self.space.needed(job), job)

    def transient(self, job: Job, reason: str, stage: str) -> None:
        svc = self._service()
        self.spool.discard_output(job)
        if job.attempts >= svc.max_attempts and not self._published(job):
            final = reason if reason in REASONS else "too_many_attempts"
            self.quarantine(job, final, stage, last_error=reason)
            return
        delay = min(svc.retry_max_seconds, svc.retry_base_seconds * 2 ** max(0, job.attempts - 1))
        delay *= random.uniform(0.8, 1.2)  # spread retries of many jobs
        with self._lock:
            self.retries += 1
        self.metrics.job_retried(reason)
        self.log.warning(
            "job.retry",
            job=job.id,
            reason=reason,
            stage=stage,
            attempts=job.attempts,
            delay_s=round(delay, 2),
        )
        self.queue.later(job, delay)

    def _published(self, job: Job) -> bool:
        """A delivered job whose clean-up failed (EIO removing the original)
        is retried, never quarantined: its original is gone from the work
        area or about to be, and the output is out."""
        try:
            return self.spool.published(job)
        except OSError:
            return "out" in job.places  # cannot tell: retrying is the safe side

    def resettle(self, job: Job, counted: bool = True) -> None:
        """The claimed original changed since its snapshot: drop this attempt
        (not counted: the input was not final) and look again after a quiet
        ``settle_seconds``; it is processed once it stopped changing."""
        with contextlib.suppress(OSError):
            if counted:
                self.spool.undo_attempt(job)
            else:
                self.spool.discard_output(job)
        self.log.info("job.input_changed", job=job.id, stage="process", size=job.size)
        if job.claim is not None:
            # Across filesystems the work area holds a copy of what it was:
            # it is dropped and copied again once the original is quiet
            # (state ``claiming``; still changing then: put back in inbound).
            try:
                self.spool.recopy(job)
            except OSError as e:
                self.log.warning("job.recopy_failed", job=job.id, errno=errname(e))
        self.queue.later(job, max(self._service().settle_seconds, _MIN_RESETTLE))

    def quarantine(
        self, job: Job, reason: str, stage: str, detail: str = "", last_error: str = ""
    ) -> None:
        """Move the job's original to quarantine; on I/O failure try again later."""
        try:
            if job.state != "quarantining":
                self.spool.start_quarantine(job, reason, stage, detail, last_error)
            self.spool.quarantine(job)
        except OSError as e:
            job.q_fails += 1
            fails = job.q_fails
            if fails > self._service().max_attempts:
                # Left claimed in the work area; the next start tries again.
                self.log.error("job.stuck", job=job.id, errno=errname(e), stage="quarantine")
                return
            self.log.warning("job.retry", job=job.id, reason=errname(e).lower(), stage="quarantine")
            self.queue.later(job, min(self._service().retry_max_seconds, 2.0**fails))
            return
        with self._lock:
            self.quarantined += 1
        r = job.reason or {}
        self.metrics.job_quarantined(str(r.get("reason", reason)))
        self.log.warning(
            "job.quarantined",
            job=job.id,
            reason=r.get("reason", reason),
            stage=r.get("stage", stage),
            attempts=job.attempts,
            size=job.size,
        )
