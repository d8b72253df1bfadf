"""The jobs in the workers' hands, their progress and their timeout.

A job that reports no progress for ``service.job_timeout_seconds`` (from
its start or its last progress report: a long video that keeps reporting
frames is never hung) cannot be interrupted (Python threads cannot be
killed and the detectors run native code), so it is marked ``timed_out``
in its manifest and the loop stops sending ``WATCHDOG=1`` and shuts down
with exit code 75 (ExitCode.TEMPFAIL); systemd's ``Restart=on-failure``
starts a fresh process, whose recovery quarantines the job with
``job_timeout``. Separate from the loop: workers register here, the status
reads the progress, the loop checks the clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from redactd.core import log
from redactd.service.spool.job import Job
from redactd.service.spool.workarea import Spool


@dataclass
class ActiveJob:
    job: Job
    started: float
    frames_done: int = 0
    frames_total: int | None = None
    #: When the job last reported progress (a video's frames): a job that
    #: makes progress is not hung, however long it runs.
    progressed: float = 0.0


class RunningJobs:
    """Active jobs by worker thread id (one writer per entry: its worker)."""

    def __init__(self, spool: Spool, clock: Callable[[], float]) -> None:
        self.spool = spool
        self._clock = clock
        self.log = log.get("redactd.service")
        self._active: dict[int, ActiveJob] = {}

    def begin(self, worker: int, job: Job) -> None:
        self._active[worker] = ActiveJob(job, self._clock())

    def end(self, worker: int) -> None:
        self._active.pop(worker, None)

    def __len__(self) -> int:
        return len(self._active)

    def ids(self) -> list[str]:
        return [a.job.id for a in list(self._active.values())]

    def progress(self) -> tuple[tuple[int, int | None], ...]:
        """(frames done, total) of each active job that reported frames."""
        return tuple(
            (a.frames_done, a.frames_total) for a in list(self._active.values()) if a.frames_done
        )

    def progress_of(self, worker: int) -> Callable[[int, int | None], None]:
        """A progress callback for the job this worker runs (shown in STATUS=)."""

        def progress(done: int, total: int | None) -> None:
            a = self._active.get(worker)
            if a is not None:
                if done != a.frames_done:
                    a.progressed = self._clock()
                a.frames_done, a.frames_total = done, total

        return progress

    def time_out(self, now: float, limit: float) -> bool:
        """Mark the jobs hung past ``limit`` timed out; True when one was."""
        hung = False
        for a in list(self._active.values()):
            # Measured from the last progress: a long video that keeps
            # reporting frames is working, not hung.
            if now - max(a.started, a.progressed) <= limit or a.job.timed_out:
                continue
            a.job.timed_out = True
            with contextlib.suppress(OSError):
                self.spool.save(a.job)
            hung = True
            self.log.error("job.timeout", job=a.job.id, running_s=round(now - a.started, 1))
        return hung
